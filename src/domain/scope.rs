use serde::{Deserialize, Serialize};

/// What an account API key may do.
///
/// `admin` covers `write` and `read`, and `write` covers `read`. `resolve` (the data plane, the
/// only scope that ever receives plaintext provider secrets) is covered by nothing else and is
/// never granted by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Admin,
    Write,
    Read,
    Resolve,
}

impl Scope {
    /// The scopes a new account's first key receives.
    pub const DEFAULT: [Scope; 3] = [Scope::Admin, Scope::Write, Scope::Read];

    /// Whether holding `self` allows an action that requires `required`.
    pub fn covers(self, required: Scope) -> bool {
        match (self, required) {
            (a, b) if a == b => true,
            (Scope::Admin, Scope::Write | Scope::Read) => true,
            (Scope::Write, Scope::Read) => true,
            _ => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Write => "write",
            Scope::Read => "read",
            Scope::Resolve => "resolve",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scope::*;

    #[test]
    fn scope_hierarchy() {
        assert!(Admin.covers(Write) && Admin.covers(Read) && Write.covers(Read));
        assert!(!Read.covers(Write) && !Write.covers(Admin));
        assert!(!Admin.covers(Resolve) && Resolve.covers(Resolve) && !Resolve.covers(Read));
    }
}
