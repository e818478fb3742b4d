//! Plain-text tables for people: columns padded to their widest cell, two spaces apart.

/// Prints `head` and `rows`, each line prefixed with `indent`.
pub fn print(indent: &str, head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(wi) = w.get_mut(i) {
                *wi = (*wi).max(c.len());
            }
        }
    }
    let line = |cells: &[&str]| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{indent}{}", s.join("  ").trim_end());
    };
    line(head);
    for r in rows {
        line(&r.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
