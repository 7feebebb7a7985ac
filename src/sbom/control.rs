//! The `Key: value` paragraph format shared by dpkg's status database (deb822), Python's
//! `METADATA`/`PKG-INFO` (email headers) and, with `K:value` lines, apk's installed
//! database. Continuation lines (starting with a space or a tab) extend the field before
//! them; a blank line ends a paragraph.

/// One paragraph: its first line (1-based) and its fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph<'a> {
    /// The line the paragraph starts on.
    pub line: usize,
    /// `(key, value)` in order; continuation lines are joined to the value with `\n`.
    pub fields: Vec<(&'a str, String)>,
}

impl Paragraph<'_> {
    /// The first value of `key` (keys compare ASCII case-insensitively, as both formats
    /// define them).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }
}

/// Splits `text` into paragraphs of `Key: value` fields. Lines that are neither a field nor
/// a continuation are skipped (a damaged database still gives what it can).
pub fn paragraphs(text: &str) -> Vec<Paragraph<'_>> {
    let mut out = Vec::new();
    let mut current: Option<Paragraph<'_>> = None;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            out.extend(current.take());
            continue;
        }
        let paragraph = current.get_or_insert_with(|| Paragraph {
            line: index + 1,
            fields: Vec::new(),
        });
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = paragraph.fields.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            if !key.is_empty() && !key.contains(' ') {
                paragraph.fields.push((key, value.trim().to_owned()));
            }
        }
    }
    out.extend(current);
    out
}

/// The header part of an email-style document (Python `METADATA`): the first paragraph.
pub fn headers(text: &str) -> Option<Paragraph<'_>> {
    // The body (the long description) follows the first blank line; only the headers are
    // parsed.
    let end = text.find("\n\n").map_or(text.len(), |end| end + 1);
    paragraphs(&text[..end]).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_split_on_blank_lines_and_join_continuations() {
        let text = "Package: a\nVersion: 1\nDescription: short\n long\n .\n\n\nPackage: b\nStatus: install ok installed\n";
        let found = paragraphs(text);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].get("package"), Some("a"));
        assert_eq!(found[0].get("Description"), Some("short\nlong\n."));
        assert_eq!(found[1].line, 8);
        assert_eq!(found[1].get("Status"), Some("install ok installed"));
        let metadata = "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n\nName: not-a-header\n";
        let headers = headers(metadata).unwrap();
        assert_eq!(
            (headers.get("name"), headers.get("version")),
            (Some("six"), Some("1.16.0"))
        );
    }
}
