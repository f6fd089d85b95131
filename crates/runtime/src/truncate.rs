//! Long outputs keep their head and tail; the middle is replaced by a note saying how much was
//! cut, so neither the model nor a client is flooded and both know something is missing.

/// Characters an observation's text may have, as in the original (30,000).
pub const MAX_OUTPUT_CHARS: usize = 30_000;

/// Returns the text, and whether it was cut.
pub fn middle(text: &str, max_chars: usize) -> (String, bool) {
    let total = text.chars().count();
    if total <= max_chars {
        return (text.to_owned(), false);
    }
    let keep = max_chars / 2;
    let head: String = text.chars().take(keep).collect();
    let tail: String = text.chars().skip(total - keep).collect();
    let omitted = total - 2 * keep;
    (
        format!("{head}\n[... {omitted} characters of output omitted ...]\n{tail}"),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_untouched_and_long_text_keeps_both_ends() {
        assert_eq!(middle("abc", 10), ("abc".to_owned(), false));
        let long = format!("{}{}{}", "a".repeat(100), "b".repeat(1000), "c".repeat(100));
        let (cut, was_cut) = middle(&long, 200);
        assert!(was_cut);
        assert!(cut.starts_with(&"a".repeat(100)) && cut.ends_with(&"c".repeat(100)));
        assert!(cut.contains("1000 characters of output omitted"));
    }
}
