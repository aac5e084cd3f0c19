//! `[rollout] quarantine_after`, `quarantine_share` and `rollback`: when a failing release
//! is quarantined, and what happens to the resources already on it. Compiled here with every
//! error (file, key, fix); what the rules mean is decided by `crate::evaluate::quarantine`.
//! It must never read anything but the raw config it is given.

use super::ConfigError;

/// What happens to the resources already on a quarantined release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RollbackMode {
    /// They stay; plan, status and the page offer `protond rollback <id> --to <previous>`.
    #[default]
    Offer,
    /// They are given the previous usable minor of the same major, stage by stage.
    Auto,
}

impl RollbackMode {
    /// `offer` or `auto`, as in the config.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offer => "offer",
            Self::Auto => "auto",
        }
    }
}

/// The quarantine rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    /// Failures in the first stage that quarantine a release (`None` when only the share
    /// counts: `quarantine_share` given without `quarantine_after`).
    pub after: Option<u32>,
    /// Share of the first stage's resources (in percent, 1 to 100) whose failure quarantines.
    pub share_percent: Option<u8>,
    /// What happens to resources already on a quarantined release.
    pub rollback: RollbackMode,
}

impl Default for Quarantine {
    fn default() -> Self {
        Self {
            after: Some(1),
            share_percent: None,
            rollback: RollbackMode::Offer,
        }
    }
}

/// Compiles the three keys of `[rollout]`; problems go to `errors`.
pub(super) fn compile(
    after: Option<u32>,
    share: Option<&str>,
    rollback: Option<&str>,
    file: &str,
    errors: &mut Vec<ConfigError>,
) -> Quarantine {
    let mut err = |key: &str, message: String| {
        errors.push(ConfigError {
            file: file.into(),
            key: format!("rollout.{key}"),
            message,
        });
    };
    if after == Some(0) {
        err(
            "quarantine_after",
            "must be at least 1 (1 quarantines a release at its first failure)".into(),
        );
    }
    let share_percent = share.and_then(|s| {
        let parsed = s
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<u8>().ok())
            .filter(|n| (1..=100).contains(n));
        if parsed.is_none() {
            err(
                "quarantine_share",
                format!("{s:?} is not a share; give a percentage from 1% to 100%, e.g. \"25%\""),
            );
        }
        parsed
    });
    let rollback = match rollback {
        None | Some("offer") => RollbackMode::Offer,
        Some("auto") => RollbackMode::Auto,
        Some(other) => {
            err(
                "rollback",
                format!(
                    "{other:?} is not a rollback mode; use \"offer\" (the default) or \"auto\""
                ),
            );
            RollbackMode::Offer
        }
    };
    Quarantine {
        // The share alone, when only it is given; one failure otherwise.
        after: after.or(if share.is_some() { None } else { Some(1) }),
        share_percent,
        rollback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compile_with_their_defaults_and_errors() {
        let mut errors = Vec::new();
        assert_eq!(
            compile(None, None, None, "p.toml", &mut errors),
            Quarantine::default()
        );
        let q = compile(None, Some("25%"), Some("auto"), "p.toml", &mut errors);
        assert_eq!(q.after, None, "the share alone counts");
        assert_eq!(q.share_percent, Some(25));
        assert_eq!(q.rollback, RollbackMode::Auto);
        let q = compile(Some(2), Some("100%"), None, "p.toml", &mut errors);
        assert_eq!((q.after, q.share_percent), (Some(2), Some(100)));
        assert!(errors.is_empty(), "{errors:?}");
        compile(Some(0), Some("0%"), Some("always"), "p.toml", &mut errors);
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "rollout.quarantine_after",
                "rollout.quarantine_share",
                "rollout.rollback"
            ]
        );
        assert!(errors[2].message.contains("\"auto\""), "{errors:?}");
    }
}
