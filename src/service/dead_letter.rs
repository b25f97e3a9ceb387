//! Dead letters: an input message that is not a valid event is written, as
//! its original bytes, to the dead-letter topic with headers that say why
//! and where it came from. Pure: the headers are data; the processor sends them.

use crate::codec::DecodeError;

/// The reason code (`DecodeError::code`: `bad_json`, `missing_field`, ...).
pub const REASON: &str = "leadscore.reason";
/// The human-readable error.
pub const ERROR: &str = "leadscore.error";
pub const SOURCE_TOPIC: &str = "leadscore.source.topic";
pub const SOURCE_PARTITION: &str = "leadscore.source.partition";
pub const SOURCE_OFFSET: &str = "leadscore.source.offset";

/// Where a dead letter was read.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// The headers of a dead letter, in the order they are written.
pub fn headers(error: &DecodeError, source: Source<'_>) -> [(&'static str, String); 5] {
    [
        (REASON, error.code().to_string()),
        (ERROR, error.to_string()),
        (SOURCE_TOPIC, source.topic.to_string()),
        (SOURCE_PARTITION, source.partition.to_string()),
        (SOURCE_OFFSET, source.offset.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_the_reason_and_the_source() {
        let err = crate::codec::decode_json(b"{not json").unwrap_err();
        let h = headers(
            &err,
            Source {
                topic: "lead-events",
                partition: 3,
                offset: 1042,
            },
        );
        assert_eq!(h[0], (REASON, "bad_json".to_string()));
        assert_eq!(h[1].0, ERROR);
        assert!(!h[1].1.is_empty());
        assert_eq!(h[2], (SOURCE_TOPIC, "lead-events".to_string()));
        assert_eq!(h[3], (SOURCE_PARTITION, "3".to_string()));
        assert_eq!(h[4], (SOURCE_OFFSET, "1042".to_string()));
    }
}
