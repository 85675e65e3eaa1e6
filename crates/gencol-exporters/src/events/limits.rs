//! Keeping events and requests within a destination's size limits: prompt and completion
//! text is cut, with a marker so a reader sees it is incomplete (a generation is worth
//! sending with its texts cut, never worth losing because they are long), and events are
//! grouped into request bodies that stay under the destination's body limit.

/// Ends a text that was cut, counted inside the limits.
pub const TRUNCATION_MARKER: &str = "...[truncated by gencol]";

/// Cuts `text` to at most `max_chars` characters, the marker included, on a char boundary.
pub fn truncate_chars(mut text: String, max_chars: usize) -> String {
    // Every char takes at least one byte: a short enough byte length needs no counting.
    if text.len() <= max_chars || text.char_indices().nth(max_chars).is_none() {
        return text;
    }
    let keep = max_chars.saturating_sub(TRUNCATION_MARKER.chars().count());
    let cut = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
    text.truncate(cut);
    text.push_str(TRUNCATION_MARKER);
    text
}

/// Cuts the longest of `texts` so that together they take at least `excess` fewer bytes
/// inside JSON: every text longer than some length is cut to it (marker included), the
/// shorter ones are kept whole, so one long completion gives way before a short prompt
/// loses anything. `Err` with the bytes the texts would still take, cut to the marker,
/// when even that does not save `excess`; nothing is cut then.
pub fn cut_longest(texts: &mut [&mut String], excess: usize) -> Result<(), usize> {
    let lens: Vec<usize> = texts.iter().map(|t| json_len(t)).collect();
    let marker = TRUNCATION_MARKER.len();
    let saved = |cap: usize| -> usize { lens.iter().map(|l| l.saturating_sub(cap)).sum() };
    if saved(marker) < excess {
        return Err(lens.iter().map(|l| (*l).min(marker)).sum());
    }
    // The longest length that still saves enough: `saved` shrinks as the length grows.
    let (mut fits, mut too_long) = (marker, lens.iter().copied().max().unwrap_or(marker) + 1);
    while too_long - fits > 1 {
        let mid = fits + (too_long - fits) / 2;
        if saved(mid) >= excess { fits = mid } else { too_long = mid }
    }
    for text in texts.iter_mut() {
        cut_to_json_bytes(text, fits);
    }
    Ok(())
}

/// Bytes a char takes inside a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Bytes `s` takes inside a JSON string, without the quotes.
pub fn json_len(s: &str) -> usize {
    s.chars().map(escaped_len).sum()
}

/// Cuts `text` so that, with the marker, it takes at most `budget` bytes inside JSON.
pub fn cut_to_json_bytes(text: &mut String, budget: usize) {
    if json_len(text) <= budget {
        return;
    }
    let keep = budget.saturating_sub(TRUNCATION_MARKER.len());
    let (mut used, mut end) = (0, 0);
    for (i, c) in text.char_indices() {
        let len = escaped_len(c);
        if used + len > keep {
            break;
        }
        used += len;
        end = i + c.len_utf8();
    }
    text.truncate(end);
    text.push_str(TRUNCATION_MARKER);
}

/// How a destination wraps a batch of events: the bytes before the first event, and after
/// the last (`[` and `]` for a JSON array); events are separated by commas.
#[derive(Clone, Copy, Debug)]
pub struct BodyShape<'a> {
    pub open: &'a [u8],
    pub close: &'a [u8],
    /// Largest body the destination takes.
    pub max_bytes: usize,
}

impl BodyShape<'_> {
    /// Groups encoded events into bodies of at most `batch_size` events and
    /// [`BodyShape::max_bytes`] bytes each, in order. An event must fit alone, with the
    /// opening and closing bytes.
    pub fn bodies(&self, events: &[Vec<u8>], batch_size: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut body: Vec<u8> = Vec::new();
        let mut count = 0;
        for event in events {
            // `,` before the event and the closing bytes after it.
            let full = count >= batch_size.max(1) || body.len() + 1 + event.len() + self.close.len() > self.max_bytes;
            if count > 0 && full {
                body.extend_from_slice(self.close);
                out.push(std::mem::take(&mut body));
                count = 0;
            }
            if count == 0 {
                body.extend_from_slice(self.open);
            } else {
                body.push(b',');
            }
            body.extend_from_slice(event);
            count += 1;
        }
        if count > 0 {
            body.extend_from_slice(self.close);
            out.push(body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_texts_give_way_first_and_short_ones_are_kept() {
        let (mut short, mut long, mut longer) = ("a".repeat(100), "b".repeat(10_000), "c\n".repeat(10_000));
        let before = json_len(&short) + json_len(&long) + json_len(&longer);
        cut_longest(&mut [&mut short, &mut long, &mut longer], 25_000).expect("enough to cut");
        assert_eq!(short, "a".repeat(100), "short texts are kept whole");
        assert!(long.ends_with(TRUNCATION_MARKER) && longer.ends_with(TRUNCATION_MARKER));
        let after = json_len(&short) + json_len(&long) + json_len(&longer);
        assert!(before - after >= 25_000, "saved {}", before - after);
        // Both long ones end up about as long as each other: neither is cut to nothing.
        assert!(json_len(&long).abs_diff(json_len(&longer)) <= 2, "{} {}", json_len(&long), json_len(&longer));
        assert!(json_len(&long) > 2_000);
    }

    #[test]
    fn texts_that_cannot_save_enough_are_left_alone() {
        let (mut a, mut b) = ("x".repeat(50), "y".repeat(10));
        let smallest = cut_longest(&mut [&mut a, &mut b], 1_000).expect_err("only 60 bytes to cut");
        assert_eq!(smallest, TRUNCATION_MARKER.len() + 10);
        assert_eq!((a.len(), b.len()), (50, 10), "nothing cut");
        assert_eq!(cut_longest(&mut [], 0), Ok(()));
    }

    #[test]
    fn bodies_are_wrapped_and_kept_under_the_limit() {
        let shape = BodyShape { open: b"{\"batch\":[", close: b"]}", max_bytes: 40 };
        let events: Vec<Vec<u8>> = ["1", "22", "333", &"4".repeat(28)].iter().map(|e| e.as_bytes().to_vec()).collect();
        let bodies = shape.bodies(&events, 2);
        let text: Vec<&str> = bodies.iter().map(|b| std::str::from_utf8(b).expect("UTF-8")).collect();
        assert_eq!(text, ["{\"batch\":[1,22]}", "{\"batch\":[333]}", &format!("{{\"batch\":[{}]}}", "4".repeat(28))]);
        assert!(bodies.iter().all(|b| b.len() <= 40));
        assert!(shape.bodies(&[], 2).is_empty());
    }
}
