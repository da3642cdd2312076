//! Identifiers: work and agent ids that stay `prefix_<digits>` (callers `grep -o 'work_[0-9]*'`)
//! yet are unique across processes and machines, and OpenTelemetry trace and span ids.

use std::time::{SystemTime, UNIX_EPOCH};

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS random source does not fail on Linux once booted; a clock-derived fallback keeps
    // ids distinct within the process if it ever did.
    if getrandom::fill(&mut buf).is_err() {
        let seed = nanos() ^ (u128::from(std::process::id()) << 64);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8;
        }
    }
    buf
}

/// Nine random digits: two agents on two machines claiming in the same nanosecond still differ.
fn random_digits() -> String {
    let n = u64::from_le_bytes(random_bytes::<8>()) % 1_000_000_000;
    format!("{n:09}")
}

/// `work_` + nanoseconds since the epoch + nine random digits.
pub fn work_id() -> String {
    format!("work_{}{}", nanos(), random_digits())
}

/// `agent_` + nanoseconds since the epoch + nine random digits.
pub fn agent_id() -> String {
    format!("agent_{}{}", nanos(), random_digits())
}

/// 128-bit trace id, 32 lowercase hex digits.
pub fn trace_id() -> String {
    hex::encode(random_bytes::<16>())
}

/// 64-bit span id, 16 lowercase hex digits.
pub fn span_id() -> String {
    hex::encode(random_bytes::<8>())
}

/// Does `id` look like a work id (`work_` and digits only)?
pub fn is_work_id(id: &str) -> bool {
    id.strip_prefix("work_")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_digits_after_the_prefix_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| work_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| is_work_id(id)));
        assert!(agent_id().starts_with("agent_"));
        assert_eq!(trace_id().len(), 32);
        assert_eq!(span_id().len(), 16);
        assert!(!is_work_id("work_"));
        assert!(!is_work_id("work_12a"));
    }
}
