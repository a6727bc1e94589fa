//! Escaping and the page's frame. Every string that reaches a page came from a resource, an
//! image or a registry, so every one goes through [`esc`]; numbers are shown rounded and carry
//! their exact value in `data-bytes` / `title`, so a reader (or a test) can check them.

use std::fmt::Write;

/// What the pages allow: their own inline styles and nothing else (no script, no fetch). The
/// server sends it as a header; the page repeats it in a meta tag for a file opened locally.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/// `s` safe in element content and in a double- or single-quoted attribute value.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `55.7 MB` (decimal megabytes, one decimal), the unit `whittle local`'s table uses.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A byte count as people read it, with the exact integer in `data-bytes` and the title.
pub fn bytes(n: u64) -> String {
    format!(
        r#"<span class="bytes" data-bytes="{n}" title="{n} bytes">{}</span>"#,
        mb(n)
    )
}

/// An optional string, escaped, or a dash.
pub fn opt(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => esc(s),
        _ => "&#8212;".to_string(),
    }
}

/// An image reference or digest: monospace, breakable, escaped.
pub fn code(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => format!("<code>{}</code>", esc(s)),
        _ => "&#8212;".to_string(),
    }
}

/// A table of label/value rows; values are HTML the caller escaped.
pub fn facts(rows: &[(&str, String)]) -> String {
    let mut out = String::from(r#"<table class="facts">"#);
    for (label, value) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{value}</td></tr>", esc(label));
    }
    out.push_str("</table>");
    out
}

/// A table with a header row; `rows` are cells of HTML the caller escaped, `row_class` names
/// each `<tr>` (so a reader can count them).
pub fn table(class: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(r#"<table class="{}"><thead><tr>"#, esc(class));
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        let _ = write!(out, r#"<tr class="{}-row">"#, esc(class));
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A section with a heading.
pub fn section(id: &str, title: &str, body: &str) -> String {
    format!(
        r#"<section id="{}"><h2>{}</h2>{body}</section>"#,
        esc(id),
        esc(title)
    )
}

/// The whole document: `title` (escaped here) and `body` (HTML the caller escaped).
pub fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{STYLE}</style></head>
<body><main>
{body}
<footer>whittle report &#183; self-contained: no scripts, no external resources</footer>
</main></body></html>
"#,
        title = esc(title)
    )
}

/// The badge of a phase or verdict: green for a success, red for a failure, grey otherwise.
pub fn badge(text: &str) -> String {
    let class = match text {
        "Succeeded" | "Passed" | "True" | "Reported" | "yes" => "ok",
        "Failed" | "False" | "Refused" | "NO" => "bad",
        _ => "neutral",
    };
    format!(r#"<span class="badge {class}">{}</span>"#, esc(text))
}

/// Kept out of the chart's colours on purpose: a screenshot test looks for those.
const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.5rem;margin:0 0 8px}
h2{font-size:1.15rem;margin:28px 0 8px;border-bottom:1px solid #d5d9e0;padding-bottom:4px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:6px;padding:4px 16px 16px;margin:16px 0}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
table.facts th{width:14em;color:#4a5263;font-weight:600}
thead th{background:#f0f2f5}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.85rem;font-weight:600}
.badge.ok{background:#d8f0dc;color:#155724}
.badge.bad{background:#f8d7da;color:#721c24}
.badge.neutral{background:#e2e5ea;color:#30343b}
.big{font-size:2rem;font-weight:700}
.muted{color:#6b7280}
pre{white-space:pre-wrap;word-break:break-word;background:#f0f2f5;padding:8px;border-radius:4px;font-size:.8rem}
footer{color:#8a909c;font-size:.8rem;margin-top:24px}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            esc(r#"<a href='x' onload="y">&"#),
            "&lt;a href=&#39;x&#39; onload=&quot;y&quot;&gt;&amp;"
        );
    }

    #[test]
    fn bytes_show_megabytes_and_carry_the_exact_count() {
        assert_eq!(mb(55_700_000), "55.7 MB");
        assert_eq!(mb(0), "0.0 MB");
        let b = bytes(4_212_345);
        assert!(
            b.contains(r#"data-bytes="4212345""#) && b.contains(">4.2 MB<"),
            "{b}"
        );
    }
}
