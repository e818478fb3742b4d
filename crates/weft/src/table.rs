//! Plain-text tables for people: columns padded to their widest cell (in characters), two
//! spaces apart, no trailing blanks.

/// Prints `head` and `rows`, each line prefixed with `indent`.
pub fn print(indent: &str, head: &[&str], rows: &[Vec<String>]) {
    print!("{}", render(indent, head, rows));
}

/// [`print`]'s text.
pub fn render(indent: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(wi) = w.get_mut(i) {
                *wi = (*wi).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w.get(i).copied().unwrap_or(0)))
            .collect();
        out.push_str(indent);
        out.push_str(s.join("  ").trim_end());
        out.push('\n');
    };
    line(head);
    for r in rows {
        line(&r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_by_characters() {
        let t = super::render(
            "",
            &["HOST", "SUBNET"],
            &[
                vec!["a".into(), "10.0.0.0/24".into()],
                vec!["long-host".into(), "x".into()],
                vec!["hôst".into(), "y".into()],
            ],
        );
        assert_eq!(
            t,
            "HOST       SUBNET\na          10.0.0.0/24\nlong-host  x\nhôst       y\n"
        );
        assert_eq!(super::render("  ", &["A"], &[]), "  A\n");
    }
}
