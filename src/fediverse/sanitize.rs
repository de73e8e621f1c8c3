//! Remote HTML made safe to put in a page, with `ammonia` (html5ever
//! underneath): only the tags Mastodon keeps in a post survive, links keep
//! only `http`/`https` targets and get `rel="nofollow noopener ugc"`, and
//! no script, style, event attribute or class ever reaches a page.

use std::collections::HashSet;

/// Longest remote content kept, in bytes of HTML (Mastodon's 500
/// characters, with room for other servers' longer posts and markup).
pub const MAX_CONTENT: usize = 64 * 1024;

/// The tags kept: those Mastodon keeps since 4.2.
pub const TAGS: [&str; 17] = [
    "p",
    "br",
    "a",
    "span",
    "del",
    "pre",
    "code",
    "em",
    "strong",
    "b",
    "i",
    "u",
    "ul",
    "ol",
    "li",
    "blockquote",
    "s",
];

/// `html` with everything but [`TAGS`], links' `href` and safe URL
/// schemes removed; at most [`MAX_CONTENT`] bytes are read.
pub fn html(html: &str) -> String {
    let mut cut = html.len().min(MAX_CONTENT);
    while !html.is_char_boundary(cut) {
        cut -= 1;
    }
    ammonia::Builder::default()
        .tags(TAGS.iter().copied().collect::<HashSet<_>>())
        .generic_attributes(HashSet::new())
        .tag_attributes(std::iter::once(("a", std::iter::once("href").collect())).collect())
        .url_schemes(["http", "https"].into_iter().collect())
        .link_rel(Some("nofollow noopener ugc"))
        .clean(&html[..cut])
        .to_string()
}

/// Plain text from a remote field that should hold none (a display
/// name): tags stripped, at most `max` characters.
pub fn text(value: &str, max: usize) -> String {
    let stripped = ammonia::Builder::empty().clean(value).to_string();
    let unescaped = stripped
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    unescaped
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_events_and_javascript_links_never_survive() {
        let dirty = r#"<p onclick="x()">hi <script>alert(1)</script><img src=x onerror="alert(2)"><a href="javascript:alert(3)">j</a> <a href="https://ok.example/" class="u-url" target="_blank">ok</a><style>p{}</style><iframe src="https://e.example"></iframe></p>"#;
        let clean = html(dirty);
        for bad in [
            "script",
            "onerror",
            "onclick",
            "javascript",
            "<img",
            "style",
            "iframe",
            "class",
            "target",
        ] {
            assert!(!clean.contains(bad), "{bad} in {clean}");
        }
        assert!(
            clean.contains(r#"<a href="https://ok.example/" rel="nofollow noopener ugc">ok</a>"#),
            "{clean}"
        );
        assert!(clean.starts_with("<p>hi "));
    }

    #[test]
    fn names_are_plain_text() {
        assert_eq!(
            text("Bob <b>the</b>\u{7}\n builder", 100),
            "Bob the builder"
        );
        assert_eq!(text("a&amp;b", 10), "a&b");
        assert_eq!(text("abcdef", 3), "abc");
    }
}
