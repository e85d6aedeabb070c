//! Human-readable renderings of plan items the EMR cannot take as FHIR resources (PDex: a
//! DocumentReference with the FHIR Bundle and a PDF; fallbacks PDF only, HTML, plain text).

use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str};

use crate::model::HistoryItem;

/// What a rendering is about.
#[derive(Debug, Clone)]
pub struct DocumentHeading {
    pub title: String,
    /// Lines under the title: patient, plan, when.
    pub lines: Vec<String>,
}

/// One item as lines of text: what, when, codes, source.
fn item_lines(item: &HistoryItem) -> (String, Vec<String>) {
    let mut lines = Vec::new();
    let when = item.when.as_ref().and_then(|w| w.day()).unwrap_or("no date");
    lines.push(format!(
        "{} · {when}{}",
        item.category.label(),
        item.status.as_deref().map(|s| format!(" · {s}")).unwrap_or_default()
    ));
    if let Some(detail) = &item.detail {
        lines.push(detail.clone());
    }
    let codes: Vec<String> = item
        .codes
        .iter()
        .filter_map(|c| {
            let code = c.code.as_deref()?;
            let system = c.system_name.as_deref().or(c.system.as_deref()).unwrap_or("");
            Some(format!("{system} {code}").trim().to_owned())
        })
        .collect();
    if !codes.is_empty() {
        lines.push(format!("Codes: {}", codes.join(", ")));
    }
    let source: Vec<&str> = [item.organization.as_ref(), item.practitioner.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|p| p.name.as_deref())
        .collect();
    if !source.is_empty() {
        lines.push(format!("Source: {}", source.join(" · ")));
    }
    (item.display.clone(), lines)
}

/// Plain text.
pub fn text(heading: &DocumentHeading, items: &[&HistoryItem]) -> String {
    let mut out = format!("{}\n", heading.title);
    for line in &heading.lines {
        out.push_str(line);
        out.push('\n');
    }
    for item in items {
        let (title, lines) = item_lines(item);
        out.push_str(&format!("\n* {title}\n"));
        for line in lines {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A self-contained XHTML-compatible HTML page (no scripts, no external resources).
pub fn html(heading: &DocumentHeading, items: &[&HistoryItem]) -> String {
    let mut out = String::from("<!DOCTYPE html><html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head><meta charset=\"utf-8\"/>");
    out.push_str(&format!(
        "<title>{}</title></head><body><h1>{}</h1>",
        escape(&heading.title),
        escape(&heading.title)
    ));
    for line in &heading.lines {
        out.push_str(&format!("<p>{}</p>", escape(line)));
    }
    out.push_str("<ul>");
    for item in items {
        let (title, lines) = item_lines(item);
        out.push_str(&format!("<li><strong>{}</strong>", escape(&title)));
        for line in lines {
            out.push_str(&format!("<br/>{}", escape(&line)));
        }
        out.push_str("</li>");
    }
    out.push_str("</ul></body></html>");
    out
}

/// Text the standard PDF fonts can show (WinAnsi): other characters become `?`.
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c {
            '·' => 0xB7,
            '–' | '—' => b'-',
            '‘' | '’' => b'\'',
            '“' | '”' => b'"',
            c if (c as u32) < 0x7F && (c as u32) >= 0x20 => c as u8,
            c if (0xA0..=0xFF).contains(&(c as u32)) => c as u32 as u8,
            _ => b'?',
        })
        .collect()
}

/// Wraps `line` to `width` characters at spaces.
fn wrap(line: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for word in line.split(' ') {
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > width {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    out.push(current);
    out
}

/// A US-letter PDF (Helvetica), one line per fact, paged.
pub fn pdf(heading: &DocumentHeading, items: &[&HistoryItem]) -> Vec<u8> {
    const TOP: f32 = 750.0;
    const BOTTOM: f32 = 60.0;
    const LEFT: f32 = 56.0;
    // (text, size, indent)
    let mut lines: Vec<(String, f32, f32)> = vec![(heading.title.clone(), 15.0, 0.0)];
    for line in &heading.lines {
        lines.push((line.clone(), 10.0, 0.0));
    }
    for item in items {
        let (title, details) = item_lines(item);
        lines.push((String::new(), 6.0, 0.0));
        for part in wrap(&title, 80) {
            lines.push((part, 11.0, 0.0));
        }
        for detail in details {
            for part in wrap(&detail, 95) {
                lines.push((part, 9.0, 14.0));
            }
        }
    }
    let mut pages: Vec<Vec<(String, f32, f32, f32)>> = vec![Vec::new()];
    let mut y = TOP;
    for (text, size, indent) in lines {
        let height = size * 1.35;
        if y - height < BOTTOM {
            pages.push(Vec::new());
            y = TOP;
        }
        y -= height;
        if let Some(page) = pages.last_mut() {
            page.push((text, size, indent, y));
        }
    }
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let font = Ref::new(3);
    let page_ids: Vec<Ref> = (0..pages.len()).map(|i| Ref::new(4 + 2 * i as i32)).collect();
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(page_ids.iter().copied()).count(pages.len() as i32);
    pdf.type1_font(font)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    let total = pages.len();
    for (index, page_lines) in pages.into_iter().enumerate() {
        let page_id = page_ids[index];
        let content_id = Ref::new(page_id.get() + 1);
        let mut page = pdf.page(page_id);
        page.parent(tree).media_box(Rect::new(0.0, 0.0, 612.0, 792.0)).contents(content_id);
        page.resources().fonts().pair(Name(b"F1"), font);
        drop(page);
        let mut content = Content::new();
        for (text, size, indent, y) in page_lines {
            if text.is_empty() {
                continue;
            }
            let bytes = win_ansi(&text);
            content
                .begin_text()
                .set_font(Name(b"F1"), size)
                .next_line(LEFT + indent, y)
                .show(Str(&bytes))
                .end_text();
        }
        let footer = win_ansi(&format!("Page {} of {total}", index + 1));
        content
            .begin_text()
            .set_font(Name(b"F1"), 8.0)
            .next_line(LEFT, 30.0)
            .show(Str(&footer))
            .end_text();
        let data = content.finish();
        pdf.stream(content_id, &data);
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Category, Code, When};

    fn item() -> HistoryItem {
        HistoryItem {
            key: "Condition/c1".into(),
            resource_type: "Condition".into(),
            category: Category::Conditions,
            display: "Asthma <uncontrolled> & \u{1F600}".into(),
            detail: None,
            codes: vec![Code {
                system: Some("http://hl7.org/fhir/sid/icd-10-cm".into()),
                system_name: Some("ICD-10-CM".into()),
                code: Some("J45.909".into()),
                display: None,
            }],
            when: When::parse(Some("2025-01-02"), None),
            status: Some("active".into()),
            organization: None,
            practitioner: None,
            sensitive: vec![],
            duplicate_of: None,
            identifiers: vec![],
            resource: serde_json::Value::Null,
            provenance: vec![],
        }
    }

    fn heading() -> DocumentHeading {
        DocumentHeading {
            title: "Member history from Sandbox Health Plan".into(),
            lines: vec!["Patient: Ada Okafor".into()],
        }
    }

    #[test]
    fn renders_pdf_html_and_text() {
        let items: Vec<HistoryItem> = (0..120).map(|_| item()).collect();
        let refs: Vec<&HistoryItem> = items.iter().collect();
        let pdf = pdf(&heading(), &refs);
        assert!(pdf.starts_with(b"%PDF-"));
        assert!(pdf.windows(5).any(|w| w == b"%%EOF"));
        let page_count = pdf.windows(10).filter(|w| w == b"/Type /Pag").count();
        assert!(page_count > 3, "long documents are paged");
        let html = html(&heading(), &refs[..1]);
        assert!(html.contains("Asthma &lt;uncontrolled&gt; &amp;"));
        assert!(!html.contains("<script"));
        let text = text(&heading(), &refs[..1]);
        assert!(text.contains("ICD-10-CM J45.909"));
    }
}
