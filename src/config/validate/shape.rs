//! The shapes of the names every run validates, by hand: each function says the pattern it
//! matches, and a test holds it to that pattern over a generated corpus. As regexes they were
//! compiled on every run (~0.35 M of `plan chapter-01`'s 4.1 M instructions) to check a config
//! of a dozen short names. Patterns checked only when a rarer key is set stay regexes.

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
/// optional port (`super::DOMAIN`).
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
    let family_ok = if strict_family {
        word(
            family,
            |b| b.is_ascii_lowercase(),
            |b| lower_or_digit(b) || b == b'-',
        )
    } else {
        word(
            family,
            |b| lower_or_digit(b) || b == b'-',
            |b| lower_or_digit(b) || b == b'-',
        )
    };
    family_ok && word(size, lower_or_digit, lower_or_digit)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::{COMPONENT, DOMAIN, re};

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
}
