//! GitHub App authentication end to end against the fake GitHub: protond signs the App's JWT
//! with a key made by `openssl` here (the fake verifies it with the public half and checks
//! `iss`, `iat`, `exp`), looks the installation up for the repo, mints an installation token
//! limited to it, reuses it while it has more than five minutes left, mints another when it
//! has less or when GitHub refuses it (401); neither the key nor a token reaches the logs.

use crate::common::forge::{FakeForge, Kind};
use crate::common::github_app::{self, App};
use crate::common::world::World;
use crate::common::{self};
use crate::proposals::{PAYMENTS_BRANCH, release};

const APP_ID: u64 = 77;
const INSTALLATION: u64 = 4242;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_app_mints_installation_tokens_reuses_them_and_refreshes_near_expiry() {
    let w = World::examples_on_moto()
        .config(|c| {
            c.repo_line("payments", "__FORGE__");
        })
        .build();
    // No static token is accepted: only the App's installation tokens.
    let github = FakeForge::start(
        Kind::GitHub,
        "",
        "no-static-token-is-accepted",
        "acme/payments",
        w.dir("payments"),
    )
    .await;
    let key_file = w.dir("app-key.pem");
    let public = github_app::key(&key_file);
    github.enable_app(App::new(APP_ID, INSTALLATION, public, 3600));
    let cfg = w.config_path();
    let text = std::fs::read_to_string(&cfg).expect("config");
    let forge = format!(
        "forge = {{ kind = \"github\", api_url = \"{}\", repo = \"acme/payments\", token_env = \"UNSET_VARIABLE\", app_id = {APP_ID}, private_key_file = \"{}\" }}",
        github.url,
        key_file.display()
    );
    std::fs::write(&cfg, text.replace("__FORGE__", &forge)).expect("config");
    let key_text = std::fs::read_to_string(&key_file).expect("key");
    let key_line = key_text
        .lines()
        .nth(1)
        .expect("a line of the key")
        .to_string();
    let reconcile = |w: &World| {
        let out = w.reconcile();
        let logs = common::text(&out);
        assert!(out.status.success(), "protond failed:\n{logs}");
        for secret in ["ghs_fake", key_line.as_str(), "eyJ"] {
            assert!(
                !logs.contains(secret),
                "{secret:?} reached the logs:\n{logs}"
            );
        }
    };

    // A token valid for an hour: minted once, used for every call of the run.
    release(&w, "web-svc", 2, "web-svc 2.0", |_, t| t);
    reconcile(&w);
    assert_eq!(github.violations(), Vec::<String>::new());
    let prs = github.prs();
    assert_eq!(prs.len(), 1, "{prs:#?}");
    assert_eq!(prs[0].head, PAYMENTS_BRANCH);
    let app = github.app();
    assert_eq!(app.lookups, 1, "installation looked up for the repo");
    assert_eq!(app.issued.len(), 1, "one token for the run: {:?}", app.uses);
    assert!(app.uses.len() >= 2, "{:?}", app.uses);
    assert!(app.uses.iter().all(|t| *t == app.issued[0].0));
    let (issued_before, uses_before) = (app.issued.len(), app.uses.len());

    // Tokens now come with four minutes left: each is replaced before its next use.
    {
        let mut g = github.inner.lock().expect("lock");
        g.app.as_mut().expect("app").lifetime = 240;
    }
    release(&w, "web-svc", 3, "web-svc 3.0", |_, t| t);
    reconcile(&w);
    assert_eq!(github.violations(), Vec::<String>::new());
    let prs = github.prs();
    assert_eq!(prs.len(), 1, "{prs:#?}");
    assert!(prs[0].title.contains("v3"), "updated: {prs:#?}");
    let app = github.app();
    let new_uses = &app.uses[uses_before..];
    let minted = app.issued.len() - issued_before;
    assert!(new_uses.len() >= 2, "{new_uses:?}");
    assert_eq!(
        minted,
        new_uses.len(),
        "one fresh token per call near expiry: {new_uses:?}"
    );
    let distinct: std::collections::BTreeSet<&String> = new_uses.iter().collect();
    assert_eq!(distinct.len(), new_uses.len(), "{new_uses:?}");

    // A token refused before its time (revoked): a new one is minted and the call retried.
    let (issued_before, uses_before) = (app.issued.len(), app.uses.len());
    {
        let mut g = github.inner.lock().expect("lock");
        let app = g.app.as_mut().expect("app");
        app.lifetime = 3600;
        app.revoke_next = 1;
    }
    release(&w, "web-svc", 4, "web-svc 4.0", |_, t| t);
    reconcile(&w);
    assert_eq!(github.violations(), Vec::<String>::new());
    let prs = github.prs();
    assert!(prs[0].title.contains("v4"), "updated: {prs:#?}");
    let app = github.app();
    assert_eq!(
        app.issued.len() - issued_before,
        2,
        "the refused token and its replacement"
    );
    let uses = &app.uses[uses_before..];
    assert_eq!(uses[0], app.revoked[0], "{uses:?}");
    assert!(
        uses[1..]
            .iter()
            .all(|t| *t == app.issued[issued_before + 1].0),
        "{uses:?}"
    );
}
