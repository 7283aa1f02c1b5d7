//! Who may call what (SPEC 13): the roles of API keys and the routes each
//! may use. Workspaces are checked where connections are read.

use serde::{Deserialize, Serialize};

/// The role of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Tokens, refresh, the proxy, connection status and lists, provider
    /// metadata and the invalidation stream, within its workspaces.
    Agent,
    /// `POST /v1/connect/sessions` only.
    Connect,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Agent, Role::Connect];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Connect => "connect",
        }
    }

    pub fn parse(raw: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == raw)
    }

    /// Whether this role may call `method` on `path` (a `/v1/…` path as
    /// requested, without its query).
    pub fn allows(self, method: &str, path: &str) -> bool {
        let read = method == "GET" || method == "HEAD";
        let one_segment_after =
            |prefix: &str| path.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
        match self {
            Role::Admin => true,
            Role::Agent => {
                (read && one_segment_after("/v1/token/"))
                    || (method == "POST" && one_segment_after("/v1/refresh/"))
                    || path.starts_with("/v1/proxy/")
                    || (read && one_segment_after("/v1/check-connection/"))
                    || (read && matches!(path, "/v1/connections" | "/v1/providers/metadata" | "/v1/invalidations"))
            }
            Role::Connect => method == "POST" && path == "/v1/connect/sessions",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_reach_their_routes_only() {
        for (method, path) in [
            ("GET", "/v1/token/c1"),
            ("HEAD", "/v1/token/c1"),
            ("POST", "/v1/refresh/c1"),
            ("DELETE", "/v1/proxy/c1/repos"),
            ("GET", "/v1/check-connection/c1"),
            ("GET", "/v1/connections"),
            ("GET", "/v1/providers/metadata"),
            ("GET", "/v1/invalidations"),
        ] {
            assert!(Role::Agent.allows(method, path), "{method} {path}");
            assert!(Role::Admin.allows(method, path));
            assert!(!Role::Connect.allows(method, path), "{method} {path}");
        }
        for (method, path) in [
            ("POST", "/v1/token/c1"),
            ("GET", "/v1/token/"),
            ("GET", "/v1/token/c1/x"),
            ("DELETE", "/v1/connections/c1"),
            ("GET", "/v1/providers"),
            ("POST", "/v1/providers"),
            ("GET", "/v1/audit"),
            ("POST", "/v1/request-connection"),
            ("POST", "/v1/connect/sessions"),
            ("GET", "/v1/webhooks"),
            ("GET", "/v1/api-keys"),
        ] {
            assert!(!Role::Agent.allows(method, path), "{method} {path}");
        }
        assert!(Role::Connect.allows("POST", "/v1/connect/sessions"));
        assert!(!Role::Connect.allows("GET", "/v1/connect/sessions"));
    }
}
