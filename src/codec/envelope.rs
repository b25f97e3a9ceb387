//! The CloudEvents envelope of the status records (`kafka.output_envelope =
//! "cloudevents"`): binary content mode of the CloudEvents Kafka protocol
//! binding, so the body stays the change in the configured format and the
//! event's attributes travel as `ce_*` headers. Consumers that do not know
//! CloudEvents read the body as before.

use super::Format;
use crate::change::{ChangeKind, StatusChange};
use crate::time::format_rfc3339;

/// The CloudEvents `type` of a status record of kind `stage_changed`.
pub const STAGE_CHANGED_TYPE: &str = "com.leadscore.status.stage_changed";
/// The CloudEvents `type` of a status record of kind `sla_breached`.
pub const SLA_BREACHED_TYPE: &str = "com.leadscore.status.sla_breached";
/// The CloudEvents `type` of a status record of kind `lead_erased`.
pub const LEAD_ERASED_TYPE: &str = "com.leadscore.status.lead_erased";
/// The CloudEvents `type` of a status record of kind `lead_expired`.
pub const LEAD_EXPIRED_TYPE: &str = "com.leadscore.status.lead_expired";

/// The headers of a status record in CloudEvents binary mode, in order:
/// `ce_specversion`, `ce_id` (the change id, unique and stable across
/// repeats), `ce_type`, `ce_source`, `ce_time` (the change's event time),
/// `ce_subject` (the lead) and `content-type` of the body.
pub fn cloudevents_headers(
    change: &StatusChange,
    source: &str,
    body: Format,
) -> [(&'static str, String); 7] {
    let content_type = match body {
        Format::Json => "application/json",
        Format::Protobuf => "application/protobuf",
    };
    [
        ("ce_specversion", "1.0".to_string()),
        ("ce_id", change.change_id.clone()),
        (
            "ce_type",
            match change.kind {
                ChangeKind::StageChanged => STAGE_CHANGED_TYPE,
                ChangeKind::SlaBreached => SLA_BREACHED_TYPE,
                ChangeKind::LeadErased => LEAD_ERASED_TYPE,
                ChangeKind::LeadExpired => LEAD_EXPIRED_TYPE,
            }
            .to_string(),
        ),
        ("ce_source", source.to_string()),
        ("ce_time", format_rfc3339(change.occurred_at)),
        ("ce_subject", change.lead_id.clone()),
        ("content-type", content_type.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Score, Stage};
    use crate::time::parse_rfc3339;

    fn change() -> StatusChange {
        StatusChange {
            kind: ChangeKind::StageChanged,
            change_id: "L-1042:3".into(),
            lead_id: "L-1042".into(),
            sequence: 3,
            from: Stage::Lead,
            to: Stage::Mql,
            occurred_at: parse_rfc3339("2026-03-02T14:00:00.250Z").unwrap(),
            score: Score {
                total: 58.5,
                fit: 25.0,
                engagement: 33.5,
            },
            band: "warm".into(),
            reasons: Vec::new(),
            top_contributors: Vec::new(),
            route: None,
            follow_up_by: None,
            model_version: "default-1".into(),
            cause_event_id: Some("evt-8f2c".into()),
        }
    }

    #[test]
    fn the_headers_carry_the_change_in_binary_mode() {
        let h = cloudevents_headers(&change(), "leadscore/prod", Format::Json);
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ce_specversion"), Some("1.0"));
        assert_eq!(get("ce_id"), Some("L-1042:3"));
        assert_eq!(get("ce_type"), Some("com.leadscore.status.stage_changed"));
        assert_eq!(get("ce_source"), Some("leadscore/prod"));
        assert_eq!(get("ce_subject"), Some("L-1042"));
        assert_eq!(get("content-type"), Some("application/json"));
        let time = get("ce_time").unwrap();
        assert_eq!(parse_rfc3339(time).unwrap(), change().occurred_at, "{time}");
        let names: Vec<&str> = h.iter().map(|(n, _)| *n).collect();
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "each header once");
    }

    #[test]
    fn a_breach_has_its_own_type() {
        let mut c = change();
        c.kind = ChangeKind::SlaBreached;
        c.change_id = "L-1042:3:sla".into();
        let h = cloudevents_headers(&c, "s", Format::Json);
        assert!(h.contains(&("ce_type", "com.leadscore.status.sla_breached".to_string())));
        assert!(h.contains(&("ce_id", "L-1042:3:sla".to_string())));
    }

    #[test]
    fn the_content_type_follows_the_body_format() {
        let h = cloudevents_headers(&change(), "s", Format::Protobuf);
        assert!(h.contains(&("content-type", "application/protobuf".to_string())));
    }
}
