//! Long outputs keep their head and tail; the middle is replaced by a note saying how much was
//! cut, so neither the model nor a client is flooded and both know something is missing.

/// Characters an observation's text may have, as in the original (30,000).
pub const MAX_OUTPUT_CHARS: usize = 30_000;

/// Returns the text, and whether it was cut. The limit is counted in bytes (cut on character
/// boundaries), so a huge text costs nothing to measure.
pub fn middle(text: &str, max_chars: usize) -> (String, bool) {
    if text.len() <= max_chars {
        return (text.to_owned(), false);
    }
    let keep = max_chars / 2;
    let mut head_end = keep;
    while !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = text.len() - keep;
    while !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let omitted = tail_start - head_end;
    (
        format!(
            "{}\n[... {omitted} characters of output omitted ...]\n{}",
            &text[..head_end],
            &text[tail_start..]
        ),
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
