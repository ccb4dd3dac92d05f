//! Boxed tables in the style of `calicoctl node status`.

/// Renders `rows` under `headers` with `+---+` borders; cells are left-aligned.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let border: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, w) in widths.iter().enumerate() {
            let cell = cells.get(i).copied().unwrap_or("");
            let pad = w - cell.chars().count();
            out.push_str(&format!("| {cell}{} ", " ".repeat(pad)));
        }
        out + "|\n"
    };
    let mut out = border.clone();
    out.push_str(&line(headers.to_vec()));
    out.push_str(&border);
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out.push_str(&border);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_calicoctl_style() {
        let t = super::render(
            &["NAME", "CIDR"],
            &[vec!["default".into(), "10.244.0.0/16".into()]],
        );
        let expected = "+---------+---------------+\n\
                        | NAME    | CIDR          |\n\
                        +---------+---------------+\n\
                        | default | 10.244.0.0/16 |\n\
                        +---------+---------------+\n";
        assert_eq!(t, expected);
    }
}
