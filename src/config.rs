//! `proton.toml`: the daemon's configuration (placeholder until the sources issue).
