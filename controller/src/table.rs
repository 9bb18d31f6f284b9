//! Plain-text tables for the CLI: columns aligned to their widest cell, two spaces apart, the
//! last column unpadded. Cells may hold what nodes and the network said, so control characters
//! (line breaks, terminal escapes) are shown as spaces: one row stays one line, and nothing a
//! node reports can drive the operator's terminal.

/// The table of `header` and `rows` (each row as many cells as the header), one line each.
pub fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let clean = |cell: &str| -> String {
        cell.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    let lines: Vec<[String; N]> = std::iter::once(header.map(str::to_string))
        .chain(rows.iter().cloned())
        .map(|row| row.map(|cell| clean(&cell)))
        .collect();
    let mut widths = [0usize; N];
    for row in &lines {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &lines {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < N {
                line.extend(std::iter::repeat_n(
                    ' ',
                    widths[i] - cell.chars().count() + 2,
                ));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_control_characters_become_spaces() {
        let rows = [
            ["n1".to_string(), "agent".into(), "ok".into()],
            [
                "storage-12".into(),
                "ssh".into(),
                "line\nbreak \u{1b}[31mred".into(),
            ],
        ];
        assert_eq!(
            render(["NODE", "PATH", "DETAIL"], &rows),
            "NODE        PATH   DETAIL\n\
             n1          agent  ok\n\
             storage-12  ssh    line break  [31mred\n"
        );
        // Widths count characters, not bytes.
        let rows = [["é".to_string(), "x".into()]];
        assert_eq!(render(["AB", "C"], &rows), "AB  C\né   x\n");
    }
}
