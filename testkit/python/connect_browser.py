"""Drives the Connect UI in Debian's headless chromium (selenium, chromedriver)
for Nexus's browser tests. Reads a JSON plan on stdin, prints a JSON report.

Plan: {"base", "static_url", "oauth_url", "tenant_url", "reauth_url", "forged_url",
       "return_prefix", "provider_prefix", "screenshots", "profile"}.
Report: what the browser saw at each step (addresses, texts, the element
keyboard focus reached); the Rust test asserts on it.
"""

import json
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

plan = json.load(sys.stdin)
shots = plan["screenshots"]
os.makedirs(shots, exist_ok=True)
opts = webdriver.ChromeOptions()
opts.binary_location = os.environ.get("NEXUS_TEST_CHROMIUM", "/usr/bin/chromium")
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-extensions", "--window-size=1280,900", "--user-data-dir=" + plan["profile"]):
    opts.add_argument(arg)
driver = webdriver.Chrome(service=Service(os.environ.get("NEXUS_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")),
                          options=opts)
driver.set_page_load_timeout(20)
wait = WebDriverWait(driver, 15)
report = {}


def shot(name):
    for width, height in ((1280, 900), (375, 800)):
        driver.set_window_size(width, height)
        driver.save_screenshot(os.path.join(shots, f"{name}-{width}.png"))
    driver.set_window_size(1280, 900)


def focused_id():
    return driver.switch_to.active_element.get_attribute("id") or ""


def tab_to(element_id, limit=30):
    for _ in range(limit):
        if focused_id() == element_id:
            return True
        driver.switch_to.active_element.send_keys(Keys.TAB)
    return focused_id() == element_id


def consent_at_provider():
    """Signs in (if asked) and consents on oidc-provider's pages, until back at the app."""
    # On the provider's site first (the page we came from has submit buttons too).
    wait.until(lambda d: d.current_url.startswith((plan["provider_prefix"], plan["return_prefix"])))
    for _ in range(6):
        wait.until(lambda d: d.current_url.startswith(plan["return_prefix"])
                   or d.find_elements(By.NAME, "login") or d.find_elements(By.CSS_SELECTOR, "button[type=submit]"))
        if driver.current_url.startswith(plan["return_prefix"]):
            return driver.current_url
        if driver.find_elements(By.NAME, "login"):
            driver.find_element(By.NAME, "login").send_keys("alice")
            driver.find_element(By.NAME, "password").send_keys("any")
        button = driver.find_element(By.CSS_SELECTOR, "button[type=submit]")
        button.click()
        # The next page, not this one still on screen.
        wait.until(EC.staleness_of(button))
    wait.until(lambda d: d.current_url.startswith(plan["return_prefix"]))
    return driver.current_url

try:
    # A static connection, by keyboard only.
    driver.get(plan["static_url"])
    wait.until(lambda d: d.current_url.rstrip("/").endswith("/connect"))
    report["address_after_exchange"] = driver.current_url
    report["picker_text"] = driver.find_element(By.TAG_NAME, "main").text
    shot("picker")
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    reached = False
    for _ in range(30):
        el = driver.switch_to.active_element
        if el.tag_name == "button" and "Acme Tickets" in el.text:
            reached = True
            break
        el.send_keys(Keys.TAB)
    report["keyboard_reached_provider"] = reached
    chosen = driver.switch_to.active_element
    chosen.send_keys(Keys.ENTER)
    wait.until(EC.staleness_of(chosen))
    wait.until(lambda d: "/auth/capture" in d.current_url)
    report["form_labels"] = [l.text for l in driver.find_elements(By.TAG_NAME, "label")]
    report["keyboard_reached_username"] = tab_to("f-username")
    driver.switch_to.active_element.send_keys("ann")
    driver.switch_to.active_element.send_keys(Keys.ENTER)  # the password is missing
    wait.until(lambda d: d.find_elements(By.ID, "e-password"))
    report["inline_error"] = driver.find_element(By.ID, "e-password").text
    report["focus_after_error"] = focused_id()
    report["username_kept"] = driver.find_element(By.ID, "f-username").get_attribute("value")
    shot("form-error")
    driver.switch_to.active_element.send_keys("wrong-pass")
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.ID, "form-error"))
    report["live_error"] = driver.find_element(By.ID, "form-error").text
    report["keyboard_reached_password"] = tab_to("f-password")
    driver.switch_to.active_element.send_keys("right-pass")
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait.until(lambda d: d.current_url.startswith(plan["return_prefix"]))
    report["static_returned_to"] = driver.current_url

    # OAuth: pick the provider, sign in and consent at oidc-provider, back to the app.
    driver.get(plan["oauth_url"])
    wait.until(lambda d: d.current_url.rstrip("/").endswith("/connect"))
    driver.find_element(By.XPATH, "//button[contains(., 'Test Identity')]").click()
    report["oauth_returned_to"] = consent_at_provider()

    # A provider that needs account details first: the form, then consent.
    driver.get(plan["tenant_url"])
    wait.until(lambda d: d.current_url.rstrip("/").endswith("/connect"))
    driver.find_element(By.XPATH, "//button[contains(., 'Tenant Identity')]").click()
    wait.until(lambda d: d.find_elements(By.ID, "f-tenant"))
    report["config_label"] = driver.find_element(By.CSS_SELECTOR, "label[for=f-tenant]").text
    driver.find_element(By.ID, "f-tenant").send_keys("acme")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "/connect" not in d.current_url)
    report["tenant_returned_to"] = consent_at_provider()

    # A connection that needs the user again, reconnected in place.
    driver.get(plan["reauth_url"])
    wait.until(lambda d: d.current_url.rstrip("/").endswith("/connect"))
    report["reauth_offered"] = "Needs your attention" in driver.find_element(By.TAG_NAME, "main").text
    driver.find_element(By.XPATH, "//button[contains(., 'Reconnect Acme Tickets')]").click()
    wait.until(lambda d: "/auth/capture" in d.current_url)
    driver.find_element(By.ID, "f-username").send_keys("ann")
    driver.find_element(By.ID, "f-password").send_keys("right-pass")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: d.current_url.startswith(plan["return_prefix"]))
    report["reauth_returned_to"] = driver.current_url

    # A link that cannot be used: a clear page, nothing started.
    driver.get(plan["forged_url"])
    report["forged_text"] = driver.find_element(By.TAG_NAME, "main").text
    shot("expired")
finally:
    driver.quit()
print(json.dumps(report))
