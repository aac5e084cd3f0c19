use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::catalog::releases::{Release, ReleaseState};
use crate::catalog::{Bundle, BundleFiles};
use crate::model::{Placement, ResourceKind, ResourceStatus};

fn v(major: u32, minor: u32) -> Version {
    Version { major, minor }
}

fn bundle() -> Arc<Bundle> {
    let manifest = "infrastructure:\n  templates:\n    - file: \"cloudformation.yaml\"\n      rendering_engine: jinja\n      template_language: cloudformation\n";
    let schema = "schema:\n  format:\n    openapi: \"3.0.0\"\n  environment_input_type: \"In\"\n  types:\n    In:\n      type: object\n      properties: {}\n";
    let mut f = BundleFiles::new("test");
    for (p, c) in [
        ("schema/schema.yaml", schema),
        ("infrastructure/manifest.yaml", manifest),
        (
            "infrastructure/cloudformation.yaml",
            "Resources:\n  T:\n    Type: AWS::SNS::Topic\n",
        ),
    ] {
        f.insert(p, c.as_bytes().to_vec()).expect("path");
    }
    Arc::new(Bundle::load("env", 1, &f).expect("bundle"))
}

fn catalog(versions: &[Version]) -> Catalog {
    let mut c = Catalog::default();
    let b = bundle();
    for version in versions {
        c.insert(Release {
            repo: "t".into(),
            template: "env".into(),
            version: *version,
            tag: format!("env/v{version}"),
            commit: "c".into(),
            notes: None,
            bundle: b.clone(),
            state: ReleaseState::Current,
            replaced: None,
        });
    }
    c
}

fn record(id: &str, repo: &str, env: &str, version: Version) -> ResourceRecord {
    ResourceRecord {
        id: id.into(),
        kind: ResourceKind::Environment,
        repo: repo.into(),
        environment: Some(env.into()),
        template: "env".into(),
        version,
        input_hash: String::new(),
        rendered_hash: String::new(),
        outputs: crate::state::Outputs::default(),
        status: ResourceStatus::Deployed,
        spec_commit: None,
        updated_at: String::new(),
        placement: Placement::default(),
    }
}

fn proposal(repo: &str, path: &str, state: ProposalState) -> ProposalRecord {
    ProposalRecord {
        repo: repo.into(),
        path: path.into(),
        template: "env".into(),
        from_major: 1,
        to_major: 2,
        branch: "b".into(),
        forge: "github".into(),
        number: Some(7),
        url: Some("https://forge.invalid/pull/7".into()),
        state,
        head: None,
        content: String::new(),
        edited: false,
        created_at: String::new(),
        updated_at: String::new(),
    }
}

fn hold(target: HoldTarget, until: SystemTime) -> Hold {
    Hold {
        target,
        all: false,
        until,
        reason: "change freeze".into(),
        by: "alice".into(),
        set_at: String::new(),
    }
}

#[test]
fn lists_what_touches_the_repo_and_nothing_else() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_hours(500_000);
    let later = now + Duration::from_hours(1);
    let deployed = [
        record("environment/dev", "platform", "dev", v(1, 0)),
        record("environment/prod", "platform", "prod", v(1, 1)),
        record("environment/other", "elsewhere", "other", v(1, 0)),
    ];
    let proposals = [
        proposal("platform", "proton/dev.yaml", ProposalState::Open),
        proposal("platform", "proton/old.yaml", ProposalState::Declined),
        proposal("elsewhere", "proton/x.yaml", ProposalState::Open),
    ];
    let approvals = BTreeMap::from([
        (
            "environment/prod".to_string(),
            PendingApproval {
                template: "env".into(),
                version: v(1, 2),
                changes: vec!["replaces Db (AWS::RDS::DBInstance)".into()],
                since: String::new(),
            },
        ),
        (
            "environment/other".to_string(),
            PendingApproval {
                template: "env".into(),
                version: v(1, 2),
                changes: Vec::new(),
                since: String::new(),
            },
        ),
    ]);
    let holds = [
        hold(HoldTarget::Resource("environment/dev".into()), later),
        hold(HoldTarget::Resource("environment/other".into()), later),
        hold(HoldTarget::Template("env".into()), now), // ended
    ];
    let pins = [PinRecord {
        target_kind: "environment".into(),
        target_name: "prod".into(),
        template: None,
        version: v(1, 1),
        by: "bob".into(),
        set_at: String::new(),
    }];
    let cat = catalog(&[v(1, 0), v(1, 1), v(1, 2)]);
    let spec_pins = BTreeMap::new();
    let inputs = Inputs {
        proposals: &proposals,
        deployed: &deployed,
        approvals: &approvals,
        holds: &holds,
        pins: &pins,
        catalog: &cat,
        spec_pins: &spec_pins,
        now,
    };
    let items = gather("platform", &inputs);
    assert_eq!(items.proposals.len(), 1, "{items:#?}");
    assert_eq!(items.proposals[0].path, "proton/dev.yaml");
    assert_eq!(
        items
            .minors
            .iter()
            .map(|m| (m.id.as_str(), m.to, m.held_by.clone()))
            .collect::<Vec<_>>(),
        [
            (
                "environment/dev",
                v(1, 2),
                vec!["hold on environment/dev".to_string()]
            ),
            (
                "environment/prod",
                v(1, 2),
                vec![
                    "pinned on 1.1 by bob".to_string(),
                    "waiting for an approval".into()
                ]
            ),
        ]
    );
    assert_eq!(items.approvals.len(), 1);
    assert_eq!(items.approvals[0].0, "environment/prod");
    assert_eq!(items.holds.len(), 2, "{:#?}", items.holds);
    assert!(items.holds[0].starts_with("hold on `environment/dev` until 2027-"));
    assert_eq!(items.holds[1], "pin of `environment:prod` on 1.1, by bob");

    let text = body("platform", &items);
    assert!(text.starts_with(MARKER));
    for needle in [
        "- `proton/dev.yaml`: **env** v1 to v2 ([#7](https://forge.invalid/pull/7))",
        "- `environment/dev`: **env** 1.0 to 1.2 (held: hold on environment/dev)",
        "`protond approve environment/prod 1.2`",
        "replaces Db (AWS::RDS::DBInstance)",
    ] {
        assert!(text.contains(needle), "{needle:?} in\n{text}");
    }
    assert!(!text.contains("other"), "{text}");
    assert_eq!(text, body("platform", &gather("platform", &inputs)));

    // Nothing pending: every section says so.
    let empty = body("platform", &Items::default());
    assert_eq!(empty.matches("\nNone.\n").count(), 4, "{empty}");
}
