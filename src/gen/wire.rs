//! The generated stream written in each input format: the native JSON lines
//! and length-delimited protobuf, Segment messages and CloudEvents
//! (structured mode), one JSON object a line.
//!
//! Each format carries the same events: decoded with the mappings
//! (README, "Feeding leadscore from Segment, RudderStack or a CloudEvents
//! source"), a Segment or CloudEvents stream folds to exactly the changes of
//! the native stream of the same seed.
//!
//! In Segment's form, a lead that browses before its first profile is an
//! anonymous visitor until then: its events carry only its `anonymousId`,
//! and that first profile is an `identify` with both ids. A lead is sent
//! so only when the visitor rules keep the result equal to the native
//! stream (see [`anonymous_leads`]); otherwise it is known from its first
//! event.

use std::collections::{HashMap, HashSet};
use std::hash::Hasher;
use std::io::{self, Write};

use serde_json::{json, Map, Value as Json};

use super::{GenConfig, Generator};
use crate::codec::{
    criteria_json, encode_event_json, encode_event_proto, event_data_json, fields_json, value_json,
};
use crate::engine::VisitorLimits;
use crate::event::{Event, Fields, Kind};
use crate::time::{format_rfc3339, Micros, DAY};

/// The format `leadscore generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GenFormat {
    /// SPEC §2's JSON lines.
    #[default]
    Json,
    /// SPEC §2's protobuf events, each preceded by its length (a varint).
    Protobuf,
    /// Segment Spec messages (`track`, `page`, `identify`), JSON lines.
    Segment,
    /// CloudEvents 1.0 in structured mode, JSON lines.
    Cloudevents,
}

impl GenFormat {
    /// The share of leads that browse anonymously first, unless asked:
    /// only Segment can say that a visitor is anonymous.
    pub fn default_anonymous_share(self) -> f64 {
        match self {
            GenFormat::Segment => 0.3,
            _ => 0.0,
        }
    }
}

/// The `source` of generated CloudEvents.
pub const CLOUDEVENTS_SOURCE: &str = "/leadscore/gen";

/// Writes the stream `cfg` generates in `format`; returns the message count.
pub fn write_stream(cfg: GenConfig, format: GenFormat, out: &mut dyn Write) -> io::Result<u64> {
    let mut w = io::BufWriter::with_capacity(1 << 16, out);
    let mut buf = Vec::with_capacity(512);
    let mut segment = match format {
        GenFormat::Segment => Some(SegmentWriter::new(&cfg, VisitorLimits::default())),
        _ => None,
    };
    let mut n = 0;
    for e in Generator::new(cfg) {
        buf.clear();
        match format {
            GenFormat::Json => encode_event_json(&e, &mut buf),
            GenFormat::Protobuf => {
                let mut body = Vec::with_capacity(256);
                encode_event_proto(&e, &mut body);
                prost::encoding::encode_varint(body.len() as u64, &mut buf);
                buf.extend_from_slice(&body);
            }
            GenFormat::Segment => {
                let msg = segment.as_mut().expect("made for segment").message(&e);
                serde_json::to_writer(&mut buf, &msg)?;
            }
            GenFormat::Cloudevents => serde_json::to_writer(&mut buf, &cloudevent(&e))?,
        }
        if format != GenFormat::Protobuf {
            buf.push(b'\n');
        }
        w.write_all(&buf)?;
        n += 1;
    }
    w.flush()?;
    Ok(n)
}

/// An event as a structured-mode CloudEvent: the envelope's attributes
/// carry the event's identity, `data` its native fields.
pub fn cloudevent(e: &Event<'_>) -> Json {
    let data = event_data_json(e);
    json!({
        "specversion": "1.0",
        "id": e.event_id,
        "source": CLOUDEVENTS_SOURCE,
        "type": e.event_type,
        "subject": e.lead_id,
        "time": format_rfc3339(e.occurred_at),
        "datacontenttype": "application/json",
        "data": data,
    })
}

/// Writes events as Segment messages, remembering which anonymous leads
/// have identified.
pub struct SegmentWriter {
    seed: u64,
    /// Leads sent anonymously until their first profile.
    anonymous: HashSet<String>,
    /// Of those, the ones whose first profile has been written.
    identified: HashSet<String>,
}

impl SegmentWriter {
    /// Plans which leads of `cfg`'s stream go anonymous (a first pass over
    /// the stream) under the visitor limits `limits`.
    pub fn new(cfg: &GenConfig, limits: VisitorLimits) -> SegmentWriter {
        SegmentWriter {
            seed: cfg.seed,
            anonymous: anonymous_leads(cfg, limits),
            identified: HashSet::new(),
        }
    }

    /// The Segment message for the next event of the stream.
    pub fn message(&mut self, e: &Event<'_>) -> Json {
        let lead = e.lead_id.as_ref();
        let anonymous = self.anonymous.contains(lead) && !self.identified.contains(lead);
        let visitor = visitor_id(self.seed, lead);
        // Which of the equivalent layouts this message uses: from its id, so
        // that a retried message is sent again byte for byte.
        let mut layout = super::Rng::new(self.seed ^ hash(&e.event_id));
        let mut m = Map::new();
        m.insert("messageId".into(), e.event_id.as_ref().into());
        m.insert("timestamp".into(), format_rfc3339(e.occurred_at).into());
        match e.kind {
            Kind::ProfileUpdated => {
                m.insert("type".into(), "identify".into());
                m.insert("userId".into(), lead.into());
                if anonymous {
                    m.insert("anonymousId".into(), visitor.into());
                    self.identified.insert(lead.to_string());
                }
                m.insert("traits".into(), traits(&e.profile, &mut layout));
            }
            Kind::Engagement => {
                if !anonymous {
                    m.insert("userId".into(), lead.into());
                }
                // Every browser message has the visitor's id, known or not.
                m.insert("anonymousId".into(), visitor.into());
                let mut properties = fields_json(&e.attributes);
                let mut context = Map::new();
                context.insert("library".into(), json!({"name": "analytics.js"}));
                if e.event_type == "page_view" {
                    m.insert("type".into(), "page".into());
                    if layout.chance(0.5) {
                        if let Some(url) = properties.remove("url") {
                            context.insert("page".into(), json!({ "url": url }));
                        }
                    }
                } else {
                    m.insert("type".into(), "track".into());
                    m.insert("event".into(), title_case(&e.event_type).into());
                }
                if layout.chance(0.2) {
                    context.insert(
                        "campaign".into(),
                        json!({"source": "newsletter", "medium": "email"}),
                    );
                }
                m.insert("properties".into(), properties.into());
                m.insert("context".into(), context.into());
            }
            // CRM feedback comes from a server, which knows only the lead.
            _ => {
                m.insert("type".into(), "track".into());
                m.insert("userId".into(), lead.into());
                m.insert("event".into(), title_case(&e.event_type).into());
                let mut properties = fields_json(&e.attributes);
                if !e.criteria.is_empty() {
                    properties.insert("criteria".into(), criteria_json(e).into());
                }
                if let Some(r) = &e.reason {
                    properties.insert("reason".into(), r.as_ref().into());
                }
                m.insert("properties".into(), properties.into());
            }
        }
        Json::Object(m)
    }
}

/// The leads of `cfg`'s stream that can be sent anonymously until their
/// first profile with the Segment stream folding to exactly the native
/// stream's changes. Of the leads the generator chose to browse first, a
/// lead qualifies when, in arrival order:
/// - it has at least one event before its first profile, and all of them
///   are engagement (a CRM event names the lead, so it is known);
/// - the visitor keeps them all: at most `limits.max_events` of them, and
///   the watermark never gets within a day (at most half the TTL) of
///   `limits.ttl` past the first of them before the profile arrives;
/// - none of them is later than the profile (so folding them at the
///   profile leaves the lead's time where the native stream puts it);
/// - a duplicate of one of them that arrives after the profile comes
///   within 16 of the lead's events of the first copy: the native lead
///   then ignores it, as the lead that the visitor's events were folded
///   into does (a lead remembers at least its last 16 event ids).
pub fn anonymous_leads(cfg: &GenConfig, limits: VisitorLimits) -> HashSet<String> {
    #[derive(Default)]
    struct Phase {
        /// The lead's events so far.
        seen: u64,
        /// Its events before the profile.
        before: usize,
        first_at: Option<Micros>,
        last_at: Micros,
        /// Ids of the events before the profile → their place in `seen`.
        ids: HashMap<String, u64>,
        identified: bool,
        rejected: bool,
    }
    let gen = Generator::new(cfg.clone());
    let mut phases: HashMap<String, Phase> = gen
        .anonymous_leads()
        .map(|id| (id, Phase::default()))
        .collect();
    if phases.is_empty() {
        return HashSet::new();
    }
    let mut watermark = Micros::MIN;
    for e in gen {
        watermark = watermark.max(e.occurred_at);
        let Some(p) = phases.get_mut(e.lead_id.as_ref()) else {
            continue;
        };
        if p.rejected {
            continue;
        }
        p.seen += 1;
        if p.identified {
            if let Some(first) = p.ids.get(e.event_id.as_ref()) {
                p.rejected = p.seen - first >= 16;
            }
            continue;
        }
        // A margin, so that whether expiry counts from the first or the
        // last event, at the watermark or past it, the visitor is there.
        let too_long = p
            .first_at
            .is_some_and(|t| watermark.saturating_sub(t) >= limits.ttl - DAY.min(limits.ttl / 2));
        match e.kind {
            Kind::ProfileUpdated => {
                p.identified = true;
                p.rejected = p.before == 0 || too_long || e.occurred_at < p.last_at;
            }
            Kind::Engagement => {
                p.before += 1;
                p.first_at = Some(p.first_at.map_or(e.occurred_at, |t| t.min(e.occurred_at)));
                p.last_at = p.last_at.max(e.occurred_at);
                p.ids.entry(e.event_id.to_string()).or_insert(p.seen);
                p.rejected = too_long || p.before > limits.max_events;
            }
            _ => p.rejected = true,
        }
    }
    phases
        .into_iter()
        .filter(|(_, p)| !p.rejected && p.before > 0)
        .map(|(id, _)| id)
        .collect()
}

/// A lead's browser id: stable for the lead and the seed, shaped like the
/// UUIDs that analytics.js makes.
pub fn visitor_id(seed: u64, lead: &str) -> String {
    let mut r = super::Rng::new(seed ^ hash(lead) ^ 0x0A11_0000_0000_0000);
    let (a, b) = (r.next_u64(), r.next_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

fn hash(s: &str) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(s.as_bytes());
    h.finish()
}

/// `demo_requested` → `Demo Requested`: the name a tracking plan uses, and
/// one that the default normalisation maps back.
pub fn title_case(event_type: &str) -> String {
    event_type
        .split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A profile as Segment traits, in one of the layouts the mapping reads:
/// `company` a string or an object with its `name` (and, in one layout,
/// `employee_count`), `title` for the job title, `address.country`.
fn traits(profile: &Fields<'_>, layout: &mut super::Rng) -> Json {
    // 0: company a string; 1: an object; 2: an object with the employees.
    let shape = layout.below(3);
    let mut t = Map::new();
    let mut company = Map::new();
    for (k, v) in profile {
        let v = value_json(v);
        match k.as_ref() {
            "company" if shape > 0 => {
                company.insert("name".into(), v);
            }
            "employees" if shape == 2 => {
                company.insert("employee_count".into(), v);
            }
            "job_title" => {
                t.insert("title".into(), v);
            }
            "country" => {
                t.insert("address".into(), json!({ "country": v }));
            }
            _ => {
                t.insert(k.to_string(), v);
            }
        }
    }
    if !company.is_empty() {
        t.insert("company".into(), company.into());
    }
    t.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_names_are_title_case_words() {
        assert_eq!(title_case("demo_requested"), "Demo Requested");
        assert_eq!(title_case("qualification_updated"), "Qualification Updated");
        assert_eq!(title_case("deal_won"), "Deal Won");
        assert_eq!(title_case("signup"), "Signup");
    }

    #[test]
    fn a_visitor_id_is_stable_per_lead_and_seed() {
        let a = visitor_id(1, "L-0000001");
        assert_eq!(a, visitor_id(1, "L-0000001"));
        assert_ne!(a, visitor_id(1, "L-0000002"));
        assert_ne!(a, visitor_id(2, "L-0000001"));
        assert_eq!(a.len(), 36, "{a}");
        assert_eq!(&a[14..15], "4", "{a}");
    }

    /// The first pass keeps a lead known when the visitor would not keep
    /// all it browsed: a visitor limit of one event rejects every lead
    /// that browsed more than once.
    #[test]
    fn the_visitor_limits_decide_who_goes_anonymous() {
        let cfg = GenConfig {
            leads: 200,
            events: 6_000,
            anonymous_share: 0.5,
            ..GenConfig::default()
        };
        let all = anonymous_leads(&cfg, VisitorLimits::default());
        let one = anonymous_leads(
            &cfg,
            VisitorLimits {
                max_events: 1,
                ..VisitorLimits::default()
            },
        );
        assert!(all.len() > 60, "{} of 200 leads", all.len());
        assert!(
            !one.is_empty() && one.len() < all.len() / 2,
            "{}",
            one.len()
        );
        assert!(one.is_subset(&all));
        let short = anonymous_leads(
            &cfg,
            VisitorLimits {
                ttl: 2 * DAY,
                ..VisitorLimits::default()
            },
        );
        assert!(short.len() < all.len() / 2, "{}", short.len());
    }
}
