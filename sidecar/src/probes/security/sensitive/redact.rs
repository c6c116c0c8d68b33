//! The redacted form of a TLS sample (`--tls-samples` without `--tls-samples-raw`): only the
//! shape of an HTTP/1.x head leaves the sidecar.

const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// The redacted form of a TLS sample: only the shape of HTTP/1.x survives.
///
/// - request line: method, normalised path (`crate::http_path::normalize`: ids become `:id`,
///   the query string is dropped) and version;
/// - status line: version, code and reason;
/// - header lines: the name, value replaced by `***`;
/// - body: `<body: N bytes>`; anything else (HTTP/2, other protocols, a read that starts in the
///   middle of a message): `<N bytes, not an HTTP/1.x head: redacted>`.
///
/// A sample cut in the middle of a line ends in `…` instead of that line (after the header name
/// when the name is complete).
pub fn redact(sample: &[u8]) -> String {
    let text = String::from_utf8_lossy(sample);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let complete_first = text.contains("\r\n");
    let head = request_line(first).or_else(|| status_line(first));
    let Some(head) = head.filter(|_| complete_first) else {
        // An incomplete first line is judged by its method or version prefix alone.
        if !complete_first
            && (METHODS.iter().any(|m| first.starts_with(&format!("{m} ")))
                || first.starts_with("HTTP/1."))
        {
            let m = first.split(' ').next().unwrap_or("");
            return format!("{m} …");
        }
        return format!("<{} bytes, not an HTTP/1.x head: redacted>", sample.len());
    };
    let mut out = vec![head];
    let rest: Vec<&str> = lines.collect();
    let n = rest.len();
    for (i, line) in rest.iter().enumerate() {
        let last = i + 1 == n;
        if line.is_empty() && !last {
            // End of the head: what follows is body.
            let body: usize =
                rest[i + 1..].iter().map(|l| l.len()).sum::<usize>() + 2 * (rest.len() - i - 2);
            out.push(String::new());
            if body > 0 {
                out.push(format!("<body: {body} sampled bytes>"));
            }
            return out.join("\r\n");
        }
        if last {
            // The sample ends here: a whole line only if the sample ended with CRLF.
            if !line.is_empty() {
                out.push(match line.split_once(':') {
                    Some((name, _)) if is_token(name) => format!("{name}: …"),
                    _ => "…".into(),
                });
            } else {
                out.push(String::new());
            }
            break;
        }
        match line.split_once(':') {
            Some((name, _)) if is_token(name) => out.push(format!("{name}: ***")),
            _ => out.push("***".into()),
        }
    }
    out.join("\r\n")
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn request_line(line: &str) -> Option<String> {
    let mut f = line.split(' ');
    let (m, target, version) = (f.next()?, f.next()?, f.next()?);
    if f.next().is_some() || !METHODS.contains(&m) || !version.starts_with("HTTP/1.") {
        return None;
    }
    Some(format!(
        "{m} {} {version}",
        crate::http_path::normalize(target)
    ))
}

fn status_line(line: &str) -> Option<String> {
    let rest = line.strip_prefix("HTTP/1.")?;
    let (minor, rest) = rest.split_once(' ')?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if minor.len() != 1 || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The reason phrase is free text a server may fill with anything: keep only a standard one.
    let reason = if reason
        .bytes()
        .all(|b| b.is_ascii_alphabetic() || b == b' ' || b == b'-')
        && reason.len() <= 32
    {
        reason
    } else {
        "***"
    };
    Some(
        format!("HTTP/1.{minor} {code} {reason}")
            .trim_end()
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_their_shape_only() {
        let r = redact(
            b"GET /users/1234/orders?token=SECRET HTTP/1.1\r\nHost: example\r\nAuthorization: Bearer SECRET\r\n\r\n",
        );
        assert_eq!(
            r,
            "GET /users/:id/orders HTTP/1.1\r\nHost: ***\r\nAuthorization: ***\r\n"
        );
        assert!(!r.contains("SECRET"));
        let r = redact(b"POST /login HTTP/1.1\r\nContent-Length: 20\r\n\r\nuser=a&password=SECRET");
        assert_eq!(
            r,
            "POST /login HTTP/1.1\r\nContent-Length: ***\r\n\r\n<body: 22 sampled bytes>"
        );
    }

    #[test]
    fn responses_and_cut_samples() {
        assert_eq!(
            redact(b"HTTP/1.1 200 OK\r\nSet-Cookie: session=SECRET\r\nContent-Ty"),
            "HTTP/1.1 200 OK\r\nSet-Cookie: ***\r\n…"
        );
        assert_eq!(
            redact(b"GET / HTTP/1.1\r\nAuthorization: Bearer SEC"),
            "GET / HTTP/1.1\r\nAuthorization: …"
        );
        assert_eq!(redact(b"GET /abc?x=SECRET HT"), "GET …");
        assert_eq!(
            redact(b"HTTP/1.0 404 SECRET=123\r\n\r\n"),
            "HTTP/1.0 404 ***\r\n"
        );
    }

    #[test]
    fn anything_else_is_masked() {
        assert_eq!(
            redact(b"user=a&password=SECRET"),
            "<22 bytes, not an HTTP/1.x head: redacted>"
        );
        assert_eq!(
            redact(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            "<24 bytes, not an HTTP/1.x head: redacted>"
        );
        assert_eq!(
            redact(&[0xff, 0, 1]),
            "<3 bytes, not an HTTP/1.x head: redacted>"
        );
        assert_eq!(
            redact(b"GET /x HTTP/1.1 extra\r\n"),
            "<23 bytes, not an HTTP/1.x head: redacted>"
        );
    }
}
