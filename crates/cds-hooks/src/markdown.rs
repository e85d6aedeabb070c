//! Card `detail` is GitHub-flavoured Markdown from an outside party: rendered without any raw
//! HTML, then sanitised (ammonia) so that only plain formatting and http(s) links remain.

use std::collections::HashSet;

use pulldown_cmark::{Event, Options, Parser};

/// Markdown → safe HTML: raw HTML in the source becomes visible text; links keep only
/// `http`/`https` URLs (absolute), open in a new tab with `rel="noopener noreferrer"`;
/// images are dropped (no tracking pixels in the chart).
pub fn to_safe_html(markdown: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let events = Parser::new_ext(markdown, options).map(|event| match event {
        // Raw HTML is shown as text, never interpreted.
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        other => other,
    });
    let mut html = String::with_capacity(markdown.len() * 2);
    pulldown_cmark::html::push_html(&mut html, events);
    sanitizer().clean(&html).to_string()
}

fn sanitizer() -> ammonia::Builder<'static> {
    let mut builder = ammonia::Builder::default();
    let mut tags = builder.clone_tags();
    tags.remove("img");
    builder
        .tags(tags)
        .url_schemes(HashSet::from(["http", "https"]))
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer"))
        .set_tag_attribute_value("a", "target", "_blank");
    builder
}

/// True for an absolute `http` or `https` URL.
pub fn is_web_url(url: &str) -> bool {
    url::Url::parse(url)
        .map(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_survives() {
        let html = to_safe_html(
            "**Bold** and a [link](https://plan.example/x)\n\n| a | b |\n|---|---|\n| 1 | 2 |",
        );
        assert!(html.contains("<strong>Bold</strong>"));
        assert!(html.contains(r#"href="https://plan.example/x""#));
        assert!(html.contains(r#"rel="noopener noreferrer""#));
        assert!(html.contains(r#"target="_blank""#));
        assert!(html.contains("<table>"));
    }

    #[test]
    fn scripts_and_dangerous_links_do_not() {
        let html = to_safe_html(
            "<script>window.__pwned=1</script>\n\n<img src=x onerror=\"window.__pwned=1\">\n\n\
             [a](javascript:window.__pwned=1) [b](data:text/html,<script>x</script>) [c](/relative) \
             ![pixel](https://tracker.example/p.png) <a href=\"https://x.example\" onclick=\"evil()\">raw</a>",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("href=\"javascript"), "{html}");
        assert!(!html.contains("href=\"data"), "{html}");
        assert!(!html.contains("href=\"/relative"), "{html}");
        // Raw HTML (with its event handlers) is still visible to the clinician, as text only.
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("&lt;a href="), "{html}");
        assert!(!html.contains("<a href=\"https://x.example\""), "{html}");
    }

    #[test]
    fn web_urls() {
        assert!(is_web_url("https://plan.example/a"));
        assert!(!is_web_url("javascript:alert(1)"));
        assert!(!is_web_url("data:text/html,x"));
        assert!(!is_web_url("/relative"));
        assert!(!is_web_url("http://"));
    }
}
