//! The offline commands read Segment and CloudEvents files: the same
//! generated stream written in each format gives `leadscore score` exactly
//! the changes of its native JSON form; `--config` applies the `[input]`
//! mappings; rules match nested attributes by dotted path.
//!
//! (Leads only: anonymous visitors and identification are the engine's,
//! tested with it.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use leadscore::cli::{explain_input, InputOptions};
use leadscore::codec::{encode_event_json, event_data_json, fields_json, value_json, InputFormat};
use leadscore::event::{Event, Kind, Value};
use leadscore::gen::{GenConfig, Generator};
use leadscore::time::format_rfc3339;
use leadscore::Model;

fn leadscore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(args)
        .output()
        .expect("run leadscore")
}

fn stdout_of(args: &[&str]) -> String {
    let out = leadscore(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("leadscore-formats-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn fields(f: &[(std::borrow::Cow<'_, str>, Value<'_>)]) -> serde_json::Value {
    fields_json(f).into()
}

/// `demo_requested` → `Demo Requested`: a track name as a tracking plan
/// writes it, which the default normalisation takes back.
fn display_name(event_type: &str) -> String {
    event_type
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        })
        .collect::<Vec<String>>()
        .join(" ")
}

/// The event as a Segment message of its lead.
fn segment(e: &Event<'_>) -> serde_json::Value {
    let mut m = serde_json::json!({
        "messageId": e.event_id,
        "userId": e.lead_id,
        "anonymousId": format!("anon-{}", e.lead_id),
        "timestamp": format_rfc3339(e.occurred_at),
    });
    let extra = match e.kind {
        Kind::ProfileUpdated => {
            serde_json::json!({"type": "identify", "traits": fields(&e.profile)})
        }
        _ if e.event_type == "page_view" => {
            // The url from the page context, as analytics.js sends it.
            let mut props = e.attributes.clone();
            let url = props
                .iter()
                .position(|(k, _)| k == "url")
                .map(|i| props.remove(i).1);
            let mut page = serde_json::json!({"type": "page", "properties": fields(&props)});
            if let Some(url) = url {
                page["context"] = serde_json::json!({"page": {"url": value_json(&url)}});
            }
            page
        }
        _ => {
            let mut props = fields(&e.attributes);
            if !e.criteria.is_empty() {
                let c: serde_json::Map<_, _> = e
                    .criteria
                    .iter()
                    .map(|(k, v)| (k.to_string(), (*v).into()))
                    .collect();
                props["criteria"] = c.into();
            }
            if let Some(r) = &e.reason {
                props["reason"] = r.as_ref().into();
            }
            serde_json::json!({"type": "track", "event": display_name(&e.event_type), "properties": props})
        }
    };
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    // Both ids on an identify would be an identification (the visitor
    // path); on other messages they belong to the userId's lead.
    if e.kind == Kind::ProfileUpdated {
        m.as_object_mut().unwrap().remove("anonymousId");
    }
    m
}

/// The event as a structured-mode CloudEvent, its type prefixed.
fn cloudevent(e: &Event<'_>) -> serde_json::Value {
    let data = event_data_json(e);
    serde_json::json!({
        "specversion": "1.0",
        "id": e.event_id,
        "source": "/crm",
        "type": format!("com.example.leads.{}", e.event_type),
        "subject": e.lead_id,
        "time": format_rfc3339(e.occurred_at),
        "datacontenttype": "application/json",
        "data": data,
    })
}

/// Writes the generated stream as native JSON, Segment and CloudEvents.
fn write_formats(dir: &Path) -> (String, String, String) {
    let (mut native, mut seg, mut ce) = (Vec::new(), String::new(), String::new());
    let events = Generator::new(GenConfig {
        seed: 15,
        leads: 300,
        events: 6_000,
        ..GenConfig::default()
    });
    let mut n = 0;
    for e in events {
        encode_event_json(&e, &mut native);
        native.push(b'\n');
        seg += &segment(&e).to_string();
        seg.push('\n');
        ce += &cloudevent(&e).to_string();
        ce.push('\n');
        n += 1;
    }
    assert!(n > 1000);
    let paths = [
        ("native.jsonl", native),
        ("segment.jsonl", seg.into_bytes()),
        ("ce.jsonl", ce.into_bytes()),
    ]
    .map(|(name, body)| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    });
    let [a, b, c] = paths;
    (a, b, c)
}

#[test]
fn segment_and_cloudevents_files_score_as_their_native_form() {
    let dir = scratch("same");
    let (native, seg, ce) = write_formats(&dir);
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "[input.cloudevents]\ntype_prefix = \"com.example.leads.\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let until = "2027-01-01T00:00:00Z";
    let want = stdout_of(&["score", "--input", &native, "--until", until]);
    assert!(want.lines().count() > 50, "the stream makes changes");
    let got = stdout_of(&[
        "score",
        "--input-format",
        "segment",
        "--input",
        &seg,
        "--until",
        until,
    ]);
    assert_eq!(got, want, "segment");
    let got = stdout_of(&[
        "score",
        "--input-format",
        "cloudevents",
        "--config",
        config,
        "--input",
        &ce,
        "--until",
        until,
    ]);
    assert_eq!(got, want, "cloudevents");
    // Without the config's prefix the types do not match the model's rules.
    let got = stdout_of(&[
        "score",
        "--input-format",
        "cloudevents",
        "--input",
        &ce,
        "--until",
        until,
    ]);
    assert_ne!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_lines_are_reported_with_their_line_and_skipped() {
    let dir = scratch("bad");
    let path = dir.join("segment.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"type":"page","messageId":"m1","timestamp":"2026-03-02T14:00:00Z","userId":"L-1"}"#, "\n",
            r#"{"type":"flush","messageId":"m2","timestamp":"2026-03-02T14:00:00Z","userId":"L-1"}"#, "\n",
            "\n",
            r#"{"type":"page","messageId":"m3","timestamp":"2026-03-02T14:00:00Z"}"#, "\n",
        ),
    )
    .unwrap();
    let out = leadscore(&[
        "score",
        "--input-format",
        "segment",
        "--input",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("segment.jsonl:2:") && err.contains("flush"),
        "{err}"
    );
    assert!(
        err.contains("segment.jsonl:4:") && err.contains("userId"),
        "{err}"
    );
    assert!(err.contains("1 events, 2 bad lines"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_config_maps_track_names_and_is_checked() {
    let dir = scratch("config");
    let config = dir.join("config.toml");
    // A whole service config: only [input] is read.
    std::fs::write(
        &config,
        "[kafka]\nbrokers = \"b:9092\"\n\n[input.segment.events]\n\"Booked a Call\" = \"demo_requested\"\n",
    )
    .unwrap();
    let events = dir.join("e.jsonl");
    let mut text = String::new();
    text += r#"{"type":"identify","messageId":"m0","timestamp":"2026-03-02T14:00:00Z","userId":"L-1","traits":{"employees":300,"industry":"automotive","title":"Head of Operations","email":"ops@acme.example"}}"#;
    text += "\n";
    text += r#"{"type":"track","event":"Booked a Call","messageId":"m1","timestamp":"2026-03-02T14:01:00Z","userId":"L-1"}"#;
    text += "\n";
    std::fs::write(&events, text).unwrap();
    let explain = |config: Option<&Path>| {
        let opts = InputOptions::load(InputFormat::Segment, config).unwrap();
        explain_input(
            Model::default_model(),
            events.to_str().unwrap(),
            &opts,
            "L-1",
            None,
        )
        .unwrap()
    };
    let demo_points = |config: Option<&Path>| -> f64 {
        explain(config)
            .engagement
            .iter()
            .filter(|l| l.event == "demo_requested")
            .map(|l| l.points)
            .sum()
    };
    assert!(demo_points(Some(&config)) > 0.0);
    // Unmapped, the name normalises to `booked_a_call`, which no rule scores.
    assert_eq!(demo_points(None), 0.0);

    std::fs::write(&config, "[input]\nvisitor_ttl = \"soon\"\n").unwrap();
    let err = InputOptions::load(InputFormat::Segment, Some(&config)).unwrap_err();
    assert!(format!("{err:#}").contains("input.visitor_ttl"), "{err:#}");
    std::fs::write(&config, "[input.segment]\nevnts = {}\n").unwrap();
    let err = InputOptions::load(InputFormat::Segment, Some(&config)).unwrap_err();
    assert!(format!("{err:#}").contains("evnts"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rules_match_nested_attributes_by_dotted_path() {
    let dir = scratch("nested");
    let model = Model::from_toml(
        r#"version = "nested"
[[engagement.rules]]
name = "newsletter_visit"
event = "page_view"
points = 7
[engagement.rules.attributes]
"context.campaign.source" = { equals = "newsletter" }

[[engagement.rules]]
name = "any_campaign"
event = "page_view"
points = 1
[engagement.rules.attributes]
"context.campaign" = { exists = true }

[[engagement.rules]]
name = "campaign_as_text"
event = "page_view"
points = 100
[engagement.rules.attributes]
"context.campaign" = { contains = "newsletter" }
"#,
    )
    .unwrap();
    let events = dir.join("e.jsonl");
    std::fs::write(
        &events,
        concat!(
            r#"{"type":"page","messageId":"m1","timestamp":"2026-03-02T14:00:00Z","userId":"L-1","context":{"campaign":{"source":"Newsletter"}}}"#, "\n",
            r#"{"type":"page","messageId":"m2","timestamp":"2026-03-02T14:00:00Z","userId":"L-2","context":{"campaign":{"source":"ads"}}}"#, "\n",
            r#"{"type":"page","messageId":"m3","timestamp":"2026-03-02T14:00:00Z","userId":"L-3"}"#, "\n",
        ),
    )
    .unwrap();
    let opts = InputOptions::load(InputFormat::Segment, None).unwrap();
    let engagement = |lead: &str| {
        explain_input(model.clone(), events.to_str().unwrap(), &opts, lead, None)
            .unwrap()
            .score
            .engagement
    };
    // The object itself is present (exists) but is not text.
    assert_eq!(engagement("L-1"), 8.0);
    assert_eq!(engagement("L-2"), 1.0);
    assert_eq!(engagement("L-3"), 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `explain` on a Segment file: a visitor is not a lead, and says what it
/// keeps; once it identifies, the lead has its scored events.
#[test]
fn explain_tells_a_visitor_from_a_lead_and_shows_what_identification_brought() {
    let dir = scratch("visitor");
    let events = dir.join("e.jsonl");
    let lines = [
        r#"{"type":"page","messageId":"m1","timestamp":"2026-03-02T10:00:00Z","anonymousId":"a-7","properties":{"url":"https://x.example/pricing"}}"#,
        r#"{"type":"page","messageId":"m2","timestamp":"2026-03-02T10:05:00Z","anonymousId":"a-7","properties":{"url":"https://x.example/blog"}}"#,
        r#"{"type":"track","event":"Demo Requested","messageId":"m3","timestamp":"2026-03-02T10:10:00Z","anonymousId":"a-7"}"#,
    ];
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let opts = InputOptions::load(InputFormat::Segment, None).unwrap();
    let explain = |who: &str| {
        explain_input(
            Model::default_model(),
            events.to_str().unwrap(),
            &opts,
            who,
            None,
        )
    };
    let err = format!("{:#}", explain("a-7").unwrap_err());
    assert!(err.contains("anonymous visitor"), "{err}");
    // The blog page scores nothing: it is not kept.
    assert!(err.contains("2 retained event(s)"), "{err}");
    assert!(err.contains("page_view at 2026-03-02T10:00:00Z"), "{err}");
    assert!(
        err.contains("demo_requested at 2026-03-02T10:10:00Z"),
        "{err}"
    );

    let identify = r#"{"type":"identify","messageId":"m4","timestamp":"2026-03-02T11:00:00Z","anonymousId":"a-7","userId":"L-9","traits":{"employees":120,"industry":"food"}}"#;
    std::fs::write(&events, lines.join("\n") + "\n" + identify + "\n").unwrap();
    let lead = explain("L-9").unwrap();
    let points = |event: &str| -> f64 {
        lead.engagement
            .iter()
            .filter(|l| l.event == event)
            .map(|l| l.points)
            .sum()
    };
    assert!(points("demo_requested") > 19.9 && points("page_view") > 4.9);
    assert_eq!(lead.score.fit, 25.0);
    let err = format!("{:#}", explain("a-7").unwrap_err());
    assert!(err.contains(r#"identified as lead "L-9""#), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
