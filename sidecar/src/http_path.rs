//! Normalising HTTP request paths into a bounded label (`--http-paths`).
//!
//! Paths are attacker-controlled and unbounded: `/users/123` and `/users/124` must be one series.
//! Every segment that looks like an identifier (numbers, UUIDs, long hex strings, or anything with
//! a digit once it is long) becomes `:id`; the query string and fragment never become labels.
//! The caller still applies a top-N budget on the result.

/// Longest normalised path kept; longer ones are cut at a segment boundary and end in `/…`.
const MAX_LEN: usize = 64;
/// Segments after this many are folded into one `/…`.
const MAX_SEGMENTS: usize = 6;

/// `/users/123/orders?id=7` → `/users/:id/orders`.
pub fn normalize(raw: &str) -> String {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    // Absolute-form request targets (proxies): keep only the path.
    let path = match path.find("://") {
        Some(i) => path[i + 3..].find('/').map_or("/", |j| &path[i + 3 + j..]),
        None => path,
    };
    if !path.starts_with('/') {
        // `*` (OPTIONS) or garbage: one bucket each, never the raw text.
        return if path == "*" {
            "*".into()
        } else {
            "invalid".into()
        };
    }
    let mut out = String::new();
    for (n, seg) in path.split('/').skip(1).enumerate() {
        if n == MAX_SEGMENTS {
            out.push_str("/…");
            return out;
        }
        let seg = if is_identifier(seg) { ":id" } else { seg };
        if out.len() + 1 + seg.len() > MAX_LEN {
            out.push_str("/…");
            return out;
        }
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn is_identifier(seg: &str) -> bool {
    if seg.is_empty() {
        return false;
    }
    let digits = seg.bytes().filter(u8::is_ascii_digit).count();
    let hex = seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let printable = seg.bytes().all(|b| b.is_ascii_graphic());
    digits == seg.len()
        || (hex && seg.len() >= 8 && digits > 0)
        || (seg.len() >= 16 && digits > 0)
        || !printable
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn collapses_ids_and_drops_queries() {
        assert_eq!(normalize("/users/123/orders?id=7"), "/users/:id/orders");
        assert_eq!(
            normalize("/o/3f2a9c1e-8d7b-4c2a-9f1e-1234567890ab"),
            "/o/:id"
        );
        assert_eq!(normalize("/blob/deadbeef42"), "/blob/:id");
        assert_eq!(normalize("/static/app.js#x"), "/static/app.js");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("http://h:8080/a/9"), "/a/:id");
        assert_eq!(normalize("*"), "*");
        assert_eq!(normalize("nope"), "invalid");
        assert_eq!(normalize("/a/b/c/d/e/f/g/h"), "/a/b/c/d/e/f/…");
        assert_eq!(normalize(&format!("/{}", "x".repeat(100))), "/…");
    }
}
