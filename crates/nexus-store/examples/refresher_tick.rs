//! Benchmark of the background refresher's claim query with 100,000 stored
//! connections: the cost of one tick when none is due and when 1,000 are due,
//! next to a `SELECT 1` round trip measured in the same run as the baseline.
//! Run through `bench/refresher.sh` (SQLite and PostgreSQL).
//!
//! Usage: refresher_tick <database-url> [connections]

use nexus_store::Store;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn time<F, Fut>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await;
        samples.push(t.elapsed());
    }
    median(samples)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).ok_or("usage: refresher_tick <database-url> [connections]")?;
    let total: i64 = std::env::args().nth(2).map(|n| n.parse()).transpose()?.unwrap_or(100_000);
    let store = Store::connect(&url).await?;
    let pool = store.pool();
    let now = chrono::Utc::now().timestamp();
    let far = now + 86_400;

    // Bulk insert `total` active connections, none due.
    let t = Instant::now();
    let chunk = 500;
    for start in (0..total).step_by(chunk) {
        let mut sql = String::from(
            "INSERT INTO connections (id, provider_id, workspace_id, status, created_at, updated_at, auth_type, next_refresh_at) VALUES ",
        );
        let end = (start + chunk as i64).min(total);
        for i in start..end {
            if i > start {
                sql.push(',');
            }
            sql.push_str(&format!("('bench-{i:07}', 'p', 'w', 'active', 0, 0, 'oauth2', {})", far + i % 3600));
        }
        let mut tx = pool.begin().await?;
        sqlx::query(&sql).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    eprintln!("inserted {total} connections in {:.1} s", t.elapsed().as_secs_f64());

    let baseline = time(50, || async {
        sqlx::query("SELECT 1").execute(pool).await.unwrap();
    })
    .await;
    let none_due = time(50, || async {
        let claimed = store.claim_due_refreshes(now, 60, 200, &[]).await.unwrap();
        assert!(claimed.is_empty());
    })
    .await;

    // Make 1,000 due; each sample claims them all (5 batches of 200) and then
    // drops the leases again so the next sample finds the same work.
    sqlx::query(&format!("UPDATE connections SET next_refresh_at = {} WHERE id < 'bench-0001000'", now - 10))
        .execute(pool)
        .await?;
    let mut samples = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let mut n = 0;
        loop {
            let claimed = store.claim_due_refreshes(now, 60, 200, &[]).await?;
            if claimed.is_empty() {
                break;
            }
            n += claimed.len();
        }
        samples.push(t.elapsed());
        assert_eq!(n, 1000);
        sqlx::query("UPDATE connections SET lease_until = NULL WHERE id < 'bench-0001000'").execute(pool).await?;
    }
    let thousand_due = median(samples);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("backend={:?} connections={total}", store.backend());
    println!("  SELECT 1 round trip (baseline)      {:>9.3} ms", ms(baseline));
    println!(
        "  tick, none due                      {:>9.3} ms  ({:.1}x baseline)",
        ms(none_due),
        ms(none_due) / ms(baseline)
    );
    println!(
        "  claim 1,000 due (5 batches of 200)  {:>9.3} ms  ({:.1}x baseline, {:.3} ms per connection)",
        ms(thousand_due),
        ms(thousand_due) / ms(baseline),
        ms(thousand_due) / 1000.0
    );
    store.close().await;
    Ok(())
}
