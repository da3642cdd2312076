//! Just enough of Elixir's version requirements to check that mix.exs, .tool-versions and
//! beamops.yaml agree, without pulling in a semver crate whose rules differ from Elixir's.

fn parts(version: &str) -> Vec<u64> {
    version
        .trim()
        .split(['.', '-', '+'])
        .map_while(|p| p.parse().ok())
        .collect()
}

fn cmp(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            a.get(i)
                .copied()
                .unwrap_or(0)
                .cmp(&b.get(i).copied().unwrap_or(0))
        })
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// Does `version` satisfy an Elixir requirement such as `~> 1.14`, `>= 1.15.0 and < 2.0.0`?
pub fn requirement_matches(requirement: &str, version: &str) -> bool {
    let v = parts(version);
    requirement.split(" or ").any(|alternative| {
        alternative.split(" and ").all(|clause| {
            let clause = clause.trim();
            let (op, rest) = ["~>", ">=", "<=", "==", "!=", ">", "<"]
                .iter()
                .find_map(|op| clause.strip_prefix(op).map(|r| (*op, r)))
                .unwrap_or(("==", clause));
            let r = parts(rest);
            use std::cmp::Ordering::*;
            match op {
                "~>" => {
                    // `~> 1.14` means >= 1.14 and < 2.0; `~> 1.14.2` means >= 1.14.2 and < 1.15.
                    let upper = match r.as_slice() {
                        [major] | [major, _] => vec![major + 1],
                        [major, minor, ..] => vec![*major, minor + 1],
                        [] => return false,
                    };
                    cmp(&v, &r) != Less && cmp(&v, &upper) == Less
                }
                ">=" => cmp(&v, &r) != Less,
                "<=" => cmp(&v, &r) != Greater,
                ">" => cmp(&v, &r) == Greater,
                "<" => cmp(&v, &r) == Less,
                "!=" => cmp(&v, &r) != Equal,
                _ => cmp(&v, &r) == Equal,
            }
        })
    })
}

/// `27` matches `27.3.4.1`; `1.18.3` matches `1.18.3-otp-27`: the shorter is a prefix.
pub fn version_prefix_matches(a: &str, b: &str) -> bool {
    let (a, b) = (parts(a), parts(b));
    let n = a.len().min(b.len());
    n > 0 && a[..n] == b[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pessimistic_requirements() {
        assert!(requirement_matches("~> 1.14", "1.18.3"));
        assert!(!requirement_matches("~> 1.14", "2.0.0"));
        assert!(!requirement_matches("~> 1.14", "1.13.4"));
        assert!(requirement_matches("~> 1.14.2", "1.14.9"));
        assert!(!requirement_matches("~> 1.14.2", "1.15.0"));
        assert!(requirement_matches(">= 1.15.0 and < 2.0.0", "1.18.3"));
        assert!(requirement_matches("~> 1.12 or ~> 2.0", "2.1"));
    }

    #[test]
    fn prefixes() {
        assert!(version_prefix_matches("27", "27.3.4.1"));
        assert!(version_prefix_matches("1.18.3", "1.18.3-otp-27"));
        assert!(!version_prefix_matches("26", "27.3"));
    }
}
