//! Who does something: a person with a token (its name, which no other token ever gets), an
//! operator at the command line, or repayd itself. Operations take an [`Actor`] and record it
//! in the audit log with the change, whatever surface (API, dashboard, CLI) they came from.

use std::fmt;
use std::str::FromStr;

/// What a token may do. Ordered: each role can do everything the roles below it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything (masked).
    Viewer,
    /// Reads, and takes collections actions (pause, resume, manual attempt, mandates).
    Collections,
    /// Also manages loans, policies and tokens, and may read full contact details (audited).
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Collections => "collections",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "collections" => Ok(Role::Collections),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}`: expected admin, collections or viewer"
            )),
        }
    }
}

/// The one who acts, as the audit log records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// A token's name (`carol`), `cli:<user>` for an operator, or `system`.
    pub name: String,
    pub role: Role,
}

impl Actor {
    /// The operator at the command line: they hold the database itself, so they act as admin.
    pub fn cli() -> Actor {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        Actor {
            name: format!("cli:{user}"),
            role: Role::Admin,
        }
    }

    /// repayd itself (residue write-offs, policy write-offs).
    pub fn system() -> Actor {
        Actor {
            name: "system".into(),
            role: Role::Admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Viewer < Role::Collections && Role::Collections < Role::Admin);
        for r in [Role::Viewer, Role::Collections, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
        assert_eq!(Actor::system().name, "system");
        assert!(Actor::cli().name.starts_with("cli:"));
    }
}
