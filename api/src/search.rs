//! What a search means, in one place for the tracker and the peer.
//!
//! A name and a query are both *folded* (Unicode NFKC, then lowercase) and
//! split into *words*: maximal runs of letters and digits
//! (`char::is_alphanumeric`); everything else separates. So
//! `Concert_Budget 2014 (00042).MKV` has the words `concert`, `budget`,
//! `2014`, `00042` and `mkv`, and `Ärger` (composed or decomposed) is
//! found by `ärger`. Diacritics are kept: `arger` does not find `Ärger`.
//!
//! A query matches a name when every query word is a prefix of some word of
//! the name, in any order (`bud con` finds the name above). Words are cut
//! to [`MAX_WORD_CHARS`] characters on both sides, a query has at most
//! [`MAX_QUERY_WORDS`] words, and a query without any letter or digit is
//! refused. Runs of CJK characters without spaces are one word, matched by
//! prefix only.
//!
//! The tracker does the folding (the databases only compare bytes), so the
//! result is the same on SQLite, MariaDB and PostgreSQL.

use unicode_normalization::UnicodeNormalization;

/// Characters of a word that are indexed and compared; longer words are cut.
pub const MAX_WORD_CHARS: usize = 32;

/// Most words in one query.
pub const MAX_QUERY_WORDS: usize = 8;

/// The distinct folded words of `text`, in first-seen order, each cut to
/// [`MAX_WORD_CHARS`] characters.
pub fn words(text: &str) -> Vec<String> {
    let folded: String = text.nfkc().flat_map(char::to_lowercase).collect();
    let mut out: Vec<String> = Vec::new();
    for run in folded.split(|c: char| !c.is_alphanumeric()) {
        if run.is_empty() {
            continue;
        }
        let word: String = run.chars().take(MAX_WORD_CHARS).collect();
        if !out.contains(&word) {
            out.push(word);
        }
    }
    out
}

/// The stored form of a name's words: each preceded by a space, so that
/// `LIKE '% w%'` tests "some word starts with `w`".
pub fn words_column(words: &[String]) -> String {
    let mut s = String::with_capacity(words.iter().map(|w| w.len() + 1).sum());
    for w in words {
        s.push(' ');
        s.push_str(w);
    }
    s
}

/// Why a query cannot be run; the text says what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadQuery(pub String);

impl std::fmt::Display for BadQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadQuery {}

/// The words of a query that decide a match: its folded words, without
/// those that are a prefix of another query word (they add nothing).
pub fn query_words(q: &str) -> Result<Vec<String>, BadQuery> {
    let all = words(q);
    if all.is_empty() {
        return Err(BadQuery(
            "q needs at least one letter or digit: a search matches words of names, \
             and everything else only separates words"
                .into(),
        ));
    }
    if all.len() > MAX_QUERY_WORDS {
        return Err(BadQuery(format!(
            "q has {} words; a search takes at most {MAX_QUERY_WORDS}",
            all.len()
        )));
    }
    let kept: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, w)| {
            !all.iter()
                .enumerate()
                .any(|(j, o)| j != *i && o.starts_with(w.as_str()) && (o.len() > w.len() || j < *i))
        })
        .map(|(_, w)| w.clone())
        .collect();
    Ok(kept)
}

/// Whether `name` matches the query words `q` (from [`query_words`]): what
/// the tracker answers, for a client that checks a name itself.
pub fn matches(name: &str, q: &[String]) -> bool {
    let name_words = words(name);
    q.iter()
        .all(|w| name_words.iter().any(|n| n.starts_with(w.as_str())))
}

/// A query that finds `name` among few others: its first
/// [`MAX_QUERY_WORDS`] words joined by spaces, or `None` when the name has
/// no letter or digit (then only an unfiltered listing finds it).
pub fn query_for_name(name: &str) -> Option<String> {
    let w = words(name);
    if w.is_empty() {
        return None;
    }
    Some(
        w.into_iter()
            .take(MAX_QUERY_WORDS)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_folds() {
        assert_eq!(
            words("Concert_Budget 2014 (00042).tar.GZ"),
            ["concert", "budget", "2014", "00042", "tar", "gz"]
        );
        assert_eq!(words("Ärger"), words("A\u{308}rger"));
        assert_eq!(words("ＡＢＣ ﬁle"), ["abc", "file"]);
        assert_eq!(words("a a A"), ["a"]);
        assert!(words("...!? -_").is_empty());
        assert_eq!(words(&"x".repeat(40))[0].len(), MAX_WORD_CHARS);
        assert_eq!(words_column(&words("a b")), " a b");
    }

    fn q(text: &str) -> Vec<String> {
        query_words(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn queries() {
        assert!(query_words("(!)").is_err());
        assert!(query_words("a b c d e f g h i").is_err());
        assert_eq!(q("con concert bud"), ["concert", "bud"]);
        assert_eq!(q("Con con"), ["con"]);
        let bud_con = q("bud CON");
        assert!(matches("concert_budget.mkv", &bud_con));
        assert!(!matches("concert.mkv", &bud_con));
        assert!(matches("Ärger.txt", &q("ärger")));
        assert!(!matches("Ärger.txt", &q("arger")));
        assert_eq!(query_for_name("!!"), None);
        assert_eq!(query_for_name("A b.C").as_deref(), Some("a b c"));
    }
}
