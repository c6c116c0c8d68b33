//! One exposition from many: each container's metrics (the sidecar's own text) with the
//! container's labels added to every sample, families merged so each name has one HELP and one
//! TYPE.

/// Families in order of first appearance: (name, HELP and TYPE lines, samples).
#[derive(Default)]
pub struct Merged {
    families: Vec<(String, Vec<String>, Vec<String>)>,
    index: std::collections::HashMap<String, usize>,
}

/// `v` as a label value (Prometheus text: backslash, double quote and newline escaped).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Merged {
    /// Add the Prometheus-text exposition `text`, every sample labelled with `labels` (a label the
    /// sample has already keeps its value: target_info's container_id, image).
    pub fn add(&mut self, text: &str, labels: &[(String, String)]) {
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                let name = rest.split(' ').next().unwrap_or("").to_string();
                let i = match self.index.get(&name) {
                    Some(i) => *i,
                    None => {
                        self.families.push((name.clone(), Vec::new(), Vec::new()));
                        self.index.insert(name, self.families.len() - 1);
                        self.families.len() - 1
                    }
                };
                let heads = &mut self.families[i].1;
                if heads.len() < 2 && !heads.iter().any(|h| h[..7] == line[..7]) {
                    heads.push(line.to_string());
                }
                current = Some(i);
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some(i) = current else { continue };
            self.families[i].2.push(relabel(line, labels));
        }
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for (_, heads, samples) in &self.families {
            for h in heads {
                out.push_str(h);
                out.push('\n');
            }
            for s in samples {
                out.push_str(s);
                out.push('\n');
            }
        }
        out
    }
}

/// `sample` with `labels` added (those it lacks).
fn relabel(sample: &str, labels: &[(String, String)]) -> String {
    let name_end = sample.find(['{', ' ']).unwrap_or(sample.len());
    let (name, rest) = sample.split_at(name_end);
    let has = |k: &str| {
        rest.starts_with('{')
            && (rest.contains(&format!("{{{k}=\"")) || rest.contains(&format!(",{k}=\"")))
    };
    let add: Vec<String> = labels
        .iter()
        .filter(|(k, _)| !has(k))
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if add.is_empty() {
        return sample.to_string();
    }
    let add = add.join(",");
    match rest.strip_prefix('{') {
        Some(inner) if inner.starts_with('}') => format!("{name}{{{add}{inner}"),
        Some(inner) => format!("{name}{{{add},{inner}"),
        None => format!("{name}{{{add}}}{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_families_and_labels_every_sample() {
        let a = "# HELP x_total X.\n# TYPE x_total counter\nx_total{comm=\"a\"} 1\n# HELP y Y.\n# TYPE y gauge\ny 2\n";
        let b = "# HELP x_total X.\n# TYPE x_total counter\nx_total{} 3\n# HELP t_info T.\n# TYPE t_info gauge\nt_info{image=\"i\"} 1\n";
        let mut m = Merged::default();
        let l = |c: &str| {
            vec![
                ("container".to_string(), c.to_string()),
                ("image".to_string(), "q\"x".to_string()),
            ]
        };
        m.add(a, &l("one"));
        m.add(b, &l("two"));
        assert_eq!(
            m.text(),
            "# HELP x_total X.\n# TYPE x_total counter\n\
             x_total{container=\"one\",image=\"q\\\"x\",comm=\"a\"} 1\n\
             x_total{container=\"two\",image=\"q\\\"x\"} 3\n\
             # HELP y Y.\n# TYPE y gauge\ny{container=\"one\",image=\"q\\\"x\"} 2\n\
             # HELP t_info T.\n# TYPE t_info gauge\nt_info{container=\"two\",image=\"i\"} 1\n"
        );
    }
}
