//! The invoice PDF writer: a small but real one-page PDF (Helvetica, one
//! line of text per entry, a correct cross-reference table), so a browser
//! or a PDF reader opens what the portal's "Download" links serve.

/// A one-page PDF with the given lines in Helvetica.
pub(super) fn pdf(lines: &[String]) -> Vec<u8> {
    let text: String = lines
        .iter()
        .enumerate()
        .map(|(n, l)| {
            let safe = l
                .replace('\\', "\\\\")
                .replace('(', "\\(")
                .replace(')', "\\)");
            format!(
                "BT /F1 {} Tf 72 {} Td ({safe}) Tj ET\n",
                if n == 0 { 20 } else { 12 },
                740 - 28 * n as i32
            )
        })
        .collect();
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_string(),
        format!("<< /Length {} >>\nstream\n{text}endstream", text.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (n, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{object}\nendobj\n", n + 1).as_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for offset in offsets {
        out.extend(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_invoice_pdf_is_a_well_formed_pdf() {
        let bytes = pdf(&[
            "Invoice EMU-0001".into(),
            "Amount paid: $29.00 (pro)".into(),
        ]);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("%PDF-1.4") && text.trim_end().ends_with("%%EOF"));
        // The xref table points at each object's exact byte offset.
        let xref = text.find("xref").unwrap();
        let offsets: Vec<usize> = text[xref..]
            .lines()
            .skip(3)
            .take(5)
            .map(|l| l[..10].parse().unwrap())
            .collect();
        for (n, offset) in offsets.iter().enumerate() {
            assert!(text[*offset..].starts_with(&format!("{} 0 obj", n + 1)));
        }
        assert!(text.contains("\\(pro\\)"), "parentheses are escaped");
    }
}
