//! The shapes of the names and versions every run validates, by hand: each function says the
//! pattern it matches, and a test holds it to that pattern. As regexes they were compiled on
//! every run (~0.55 M of `plan chapter-01`'s instructions) to check a config of a dozen short
//! values; a fixed-count repeat (`{40}`, `{1,200}`) compiles to that many copies of its class.
//! Patterns checked only when a rarer key is set stay regexes.

fn lower_or_digit(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A non-empty `text` whose first byte is `first` and every other byte `rest`.
fn word(text: &str, first: fn(u8) -> bool, rest: fn(u8) -> bool) -> bool {
    match text.as_bytes().split_first() {
        Some((&head, tail)) => first(head) && tail.iter().all(|&b| rest(b)),
        None => false,
    }
}

fn digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// `^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`: a Docker repository path component
/// (distribution's reference grammar), and an app or stack name.
pub(super) fn is_component(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    loop {
        let run = i;
        while i < b.len() && lower_or_digit(b[i]) {
            i += 1;
        }
        if i == run {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' if b.get(i + 1) == Some(&b'_') => i += 2,
            b'_' => i += 1,
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `^[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$`: one label of a host name.
fn is_label(text: &str) -> bool {
    let b = text.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        }
        _ => false,
    }
}

/// `^(?:localhost|LABEL(?:\.LABEL)*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$`: a registry host with an
/// optional port (`DOMAIN`, the pattern the tests hold it to).
pub(super) fn is_domain(text: &str) -> bool {
    let port_ok = |port: &str| digits(port) && port.len() <= 5;
    if let Some(inner) = text.strip_prefix('[') {
        let Some((address, after)) = inner.split_once(']') else {
            return false;
        };
        !address.is_empty()
            && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
            && (after.is_empty() || after.strip_prefix(':').is_some_and(port_ok))
    } else {
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        host.split('.').all(is_label) && port.is_none_or(port_ok)
    }
}

/// `^DOMAIN(?:/COMPONENT)*$`: a registry, perhaps with a path.
pub(super) fn is_registry(text: &str) -> bool {
    let mut parts = text.split('/');
    parts.next().is_some_and(is_domain) && parts.all(is_component)
}

/// `^(?:DOMAIN/)?COMPONENT(?:/COMPONENT)*$`: an image repository without tag or digest.
pub(super) fn is_repository(text: &str) -> bool {
    let all_components = |parts: &str| parts.split('/').all(is_component);
    all_components(text)
        || text
            .split_once('/')
            .is_some_and(|(domain, path)| is_domain(domain) && all_components(path))
}

/// `^[a-z][a-z0-9_]*$`: an OTP application name.
pub(super) fn is_otp_app(text: &str) -> bool {
    word(
        text,
        |b| b.is_ascii_lowercase(),
        |b| lower_or_digit(b) || b == b'_',
    )
}

/// `^[a-z0-9][a-z0-9_-]*$`: an environment name.
pub(super) fn is_environment(text: &str) -> bool {
    word(text, lower_or_digit, |b| {
        lower_or_digit(b) || b == b'_' || b == b'-'
    })
}

/// `^[A-Z][A-Z0-9_]*$`: a secret's (environment variable's) name.
pub(super) fn is_secret(text: &str) -> bool {
    word(
        text,
        |b| b.is_ascii_uppercase(),
        |b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_',
    )
}

/// `^[0-9]+\.[0-9]+\.[0-9]+(?:-rc\.[0-9]+)?$`: an Elixir version.
pub(super) fn is_elixir_version(text: &str) -> bool {
    let (version, candidate) = match text.split_once("-rc.") {
        Some((version, candidate)) => (version, Some(candidate)),
        None => (text, None),
    };
    let parts: Vec<&str> = version.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| digits(p)) && candidate.is_none_or(digits)
}

/// `^[a-z][a-z0-9-]*\.[a-z0-9]+$` (`strict_family`) or `^[a-z0-9-]+\.[a-z0-9]+$`: an EC2
/// instance type.
pub(super) fn is_instance_type(text: &str, strict_family: bool) -> bool {
    let Some((family, size)) = text.split_once('.') else {
        return false;
    };
    let in_family = |b: u8| lower_or_digit(b) || b == b'-';
    let first: fn(u8) -> bool = if strict_family {
        |b| b.is_ascii_lowercase()
    } else {
        in_family
    };
    word(family, first, in_family) && word(size, lower_or_digit, lower_or_digit)
}

/// `^[a-z]{2}(?:-gov)?-[a-z]+-[0-9]$`: an AWS region.
pub(super) fn is_aws_region(text: &str) -> bool {
    let letters = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase());
    let parts: Vec<&str> = text.split('-').collect();
    let (area, name, number) = match parts[..] {
        [area, name, number] => (area, name, number),
        [area, "gov", name, number] => (area, name, number),
        _ => return false,
    };
    area.len() == 2 && letters(area) && letters(name) && number.len() == 1 && digits(number)
}

/// `^(?:[0-9]{12}|amazon|aws-marketplace|self)$`: who owns an AMI.
pub(super) fn is_image_owner(text: &str) -> bool {
    matches!(text, "amazon" | "aws-marketplace" | "self") || (text.len() == 12 && digits(text))
}

/// A Docker repository path component (distribution's reference grammar).
#[cfg(test)]
const COMPONENT: &str = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
/// A registry host: a domain name or an address, with an optional port.
#[cfg(test)]
const DOMAIN: &str = r"(?:localhost|(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?";

/// `^REPOSITORY(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$`, the tag and digest by hand:
/// as a regex, their fixed-count repeats compile to ~200 copies of a class on every run.
pub(super) fn is_reference(reference: &str) -> bool {
    let (name_tag, digest_ok) = match reference.split_once('@') {
        Some((name_tag, digest)) => (
            name_tag,
            digest.strip_prefix("sha256:").is_some_and(|hex| {
                hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            }),
        ),
        None => (reference, true),
    };
    // A `:` after the last `/` starts the tag (a repository component has none); one before it
    // is the registry's port or an IPv6 address.
    let slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(colon) if slash.is_none_or(|s| colon > s) => {
            (&name_tag[..colon], Some(&name_tag[colon + 1..]))
        }
        _ => (name_tag, None),
    };
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let tag_ok = tag.is_none_or(|t| {
        let b = t.as_bytes();
        (1..=128).contains(&b.len())
            && word(b[0])
            && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
    });
    digest_ok && tag_ok && is_repository(name)
}

/// `^[0-9]{2}(?:\.[0-9]+){0,4}$`: two-digit major, at most four more numeric parts.
pub(super) fn is_otp_version(text: &str) -> bool {
    let mut parts = text.split('.');
    let major = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    major.len() == 2
        && major.bytes().all(|b| b.is_ascii_digit())
        && rest.len() <= 4
        && rest
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `^[0-9a-f]{40}$`: a full SHA-1 commit id.
pub(super) fn is_commit(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `^[A-Za-z0-9._/-]{1,200}$`: the characters a branch name may use here.
pub(super) fn is_branch_chars(text: &str) -> bool {
    (1..=200).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::re;

    /// Every sequence of up to four of these tokens, and a few longer names: the corpus each
    /// hand-written shape is held to its pattern on.
    fn corpus() -> Vec<String> {
        const TOKENS: &[&str] = &[
            "",
            "a",
            "ab",
            "Z",
            "0",
            "12",
            "-",
            "--",
            ".",
            "_",
            "__",
            "/",
            ":",
            "[",
            "]",
            "-gov",
            "-0",
            "0.1.",
            "-rc.",
            "localhost",
            "5000",
            "amazon",
            "self",
            "é",
        ];
        let mut out = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|s| TOKENS[1..].iter().map(move |t| format!("{s}{t}")))
                .collect();
            out.extend(last.iter().cloned());
        }
        out.extend(
            [
                "coordination",
                "ghcr.io/acme/coordination",
                "localhost:5000/a/b",
                "[::1]:5000/app",
                "[::1]/app",
                "[]/app",
                "registry.example.com:443/x/y_z__w---v",
                "my-host.example.com:123456/app",
                "a-.b/c",
                "1.18.3",
                "1.18.3-rc.0",
                "1.18-rc.1",
                "1.18.3-rc.1-rc.2",
                "eu-west-1",
                "us-gov-west-1",
                "us-gov-1",
                "eu-west-12",
                "eus-west-1",
                "t3.micro",
                "m7g-flex.large",
                "7g.large",
                "t3.micro.x",
                "123456789012",
                "12345678901",
                "aws-marketplace",
                "SECRET_KEY_BASE",
                "_SECRET",
            ]
            .map(String::from),
        );
        out
    }

    #[test]
    fn hand_written_shapes_match_their_patterns() {
        type Shape<'a> = (&'a str, &'a dyn Fn(&str) -> bool);
        let shapes: &[Shape] = &[
            (&format!("^{COMPONENT}$"), &is_component),
            (&format!("^{DOMAIN}$"), &is_domain),
            (
                &format!(r"^(?:{DOMAIN}/)?{COMPONENT}(?:/{COMPONENT})*$"),
                &is_repository,
            ),
            (&format!(r"^{DOMAIN}(?:/{COMPONENT})*$"), &is_registry),
            (r"^[a-z][a-z0-9_]*$", &is_otp_app),
            (r"^[a-z0-9][a-z0-9_-]*$", &is_environment),
            (r"^[A-Z][A-Z0-9_]*$", &is_secret),
            (
                r"^[0-9]+\.[0-9]+\.[0-9]+(?:-rc\.[0-9]+)?$",
                &is_elixir_version,
            ),
            (r"^[a-z][a-z0-9-]*\.[a-z0-9]+$", &|t| {
                is_instance_type(t, true)
            }),
            (r"^[a-z0-9-]+\.[a-z0-9]+$", &|t| is_instance_type(t, false)),
            (r"^[a-z]{2}(?:-gov)?-[a-z]+-[0-9]$", &is_aws_region),
            (
                r"^(?:[0-9]{12}|amazon|aws-marketplace|self)$",
                &is_image_owner,
            ),
        ];
        let corpus = corpus();
        for (pattern, shape) in shapes {
            let regex = re(pattern);
            let mut accepted = 0;
            for text in &corpus {
                let expected = regex.is_match(text);
                assert_eq!(shape(text), expected, "{pattern} on {text:?}");
                accepted += usize::from(expected);
            }
            // A corpus the pattern rejects whole would prove nothing.
            assert!(accepted > 0, "{pattern} accepts nothing of the corpus");
        }
    }

    /// The hand-written checks accept exactly what the patterns they replace accept.
    #[test]
    fn hand_checks_match_their_patterns() {
        let otp = re(r"^[0-9]{2}(?:\.[0-9]+){0,4}$");
        let commit = re(r"^[0-9a-f]{40}$");
        let branch = re(r"^[A-Za-z0-9._/-]{1,200}$");
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let long = "b".repeat(200);
        let too_long = "b".repeat(201);
        let inputs = [
            "",
            "2",
            "27",
            "270",
            "27.",
            "27.3",
            "27.3.4.1",
            "27.3.4.1.5",
            "27.3.4.1.5.6",
            "27..3",
            ".27",
            "27.a",
            "ab",
            "27\n",
            " 27",
            "2٧",
            "main",
            "feature/x-1.2_3",
            "a b",
            "ü",
            "-",
            "/",
            sha,
            &sha.to_uppercase(),
            &sha[1..],
            &format!("{sha}0"),
            &long,
            &too_long,
        ];
        let reference = re(&format!(
            r"^(?:{DOMAIN}/)?{COMPONENT}(?:/{COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?$"
        ));
        let tag = format!("debian:{}", "t".repeat(128));
        let tag_long = format!("debian:{}", "t".repeat(129));
        let digest = format!("debian@sha256:{}", "a".repeat(64));
        let tag_digest = format!("localhost:5000/a/b:1.2-x_y@sha256:{}", "0".repeat(64));
        let digest_short = format!("debian@sha256:{}", "a".repeat(63));
        let digest_upper = format!("debian@sha256:{}", "A".repeat(64));
        for text in [
            "debian",
            "debian:trixie-slim",
            "debian:",
            "debian:.x",
            "debian:_x",
            "debian:-x",
            "ghcr.io/acme/app:1.0",
            "localhost:5000/app",
            "localhost:5000/app:v1",
            "localhost:5000",
            "[::1]:5000/app:v1",
            "[::1]/app",
            "a:b:c",
            "a/b:c/d",
            "Debian",
            "debian:bad tag",
            "debian@",
            "debian@sha256:",
            "registry.example.com:443/x/y_z__w---v:tag",
            ":tag",
            "/a",
            "a//b",
            "a:b@c",
            "débian",
            &tag,
            &tag_long,
            &digest,
            &tag_digest,
            &digest_short,
            &digest_upper,
        ] {
            assert_eq!(
                is_reference(text),
                reference.is_match(text),
                "reference {text:?}"
            );
        }
        for text in inputs {
            assert_eq!(is_otp_version(text), otp.is_match(text), "otp {text:?}");
            assert_eq!(is_commit(text), commit.is_match(text), "commit {text:?}");
            assert_eq!(
                is_branch_chars(text),
                branch.is_match(text),
                "branch {text:?}"
            );
        }
    }
}
