//! A unified line diff (`diff -u`'s format, three lines of context), for `mirage rewrite --dry-run`: Myers'
//! shortest edit script over lines. Lines keep their own endings (a CRLF file shows `\r` inside its lines, as
//! `diff` does), and a last line without a newline is marked `\ No newline at end of file`.

use std::fmt::Write as _;

/// Lines of unchanged context around each change.
const CONTEXT: usize = 3;

/// One step of the edit script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The line is in both (old index, new index).
    Same(usize, usize),
    /// Only in the old text.
    Removed(usize),
    /// Only in the new text.
    Added(usize),
}

/// The unified diff from `old` to `new`, labelled `--- {old_name}` and `+++ {new_name}`; empty when equal.
pub fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let steps = edit_script(&a, &b);
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    let changed: Vec<usize> =
        steps.iter().enumerate().filter(|(_, step)| !matches!(step, Step::Same(..))).map(|(at, _)| at).collect();
    let mut next = 0;
    while next < changed.len() {
        // A hunk: from CONTEXT steps before this change to CONTEXT after the last change within reach.
        let mut last = next;
        while last + 1 < changed.len() && changed[last + 1] - changed[last] <= 2 * CONTEXT {
            last += 1;
        }
        let start = changed[next].saturating_sub(CONTEXT);
        let end = (changed[last] + CONTEXT + 1).min(steps.len());
        write_hunk(&mut out, &steps[start..end], &a, &b);
        next = last + 1;
    }
    out
}

fn write_hunk(out: &mut String, steps: &[Step], a: &[&str], b: &[&str]) {
    let old_start = steps.iter().find_map(|step| match step {
        Step::Same(old, _) | Step::Removed(old) => Some(*old),
        Step::Added(_) => None,
    });
    let new_start = steps.iter().find_map(|step| match step {
        Step::Same(_, new) | Step::Added(new) => Some(*new),
        Step::Removed(_) => None,
    });
    let old_len = steps.iter().filter(|step| !matches!(step, Step::Added(_))).count();
    let new_len = steps.iter().filter(|step| !matches!(step, Step::Removed(_))).count();
    // `diff -u` numbers lines from 1, and an empty side (only possible for an empty file here, since context
    // surrounds every change) as line 0.
    let _ = writeln!(
        out,
        "@@ -{},{old_len} +{},{new_len} @@",
        old_start.map_or(0, |start| start + 1),
        new_start.map_or(0, |start| start + 1)
    );
    for step in steps {
        let (sign, line) = match *step {
            Step::Same(old, _) => (' ', a[old]),
            Step::Removed(old) => ('-', a[old]),
            Step::Added(new) => ('+', b[new]),
        };
        out.push(sign);
        out.push_str(line);
        if !line.ends_with('\n') {
            out.push_str("\n\\ No newline at end of file\n");
        }
    }
}

/// Myers' O((N+M)·D) shortest edit script from `a` to `b`. Articles are short in lines and a rewrite changes few
/// of them, so D is small.
fn edit_script(a: &[&str], b: &[&str]) -> Vec<Step> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = n + m;
    // Frontier: the furthest x reached on each diagonal k = x - y, stored at k + max + 1.
    let at = |k: isize| (k + max + 1) as usize;
    let mut v = vec![0isize; (2 * max + 3) as usize];
    // The frontier before each round d, to walk back through.
    let mut trace: Vec<Vec<isize>> = Vec::new();
    'search: for d in 0..=max {
        trace.push(v.clone());
        for k in (-d..=d).step_by(2) {
            let mut x =
                if k == -d || (k != d && v[at(k - 1)] < v[at(k + 1)]) { v[at(k + 1)] } else { v[at(k - 1)] + 1 };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[at(k)] = x;
            if x >= n && y >= m {
                break 'search;
            }
        }
    }
    let mut steps = Vec::new();
    let (mut x, mut y) = (n, m);
    for d in (0..trace.len() as isize).rev() {
        let v = &trace[d as usize];
        let k = x - y;
        let down = k == -d || (k != d && v[at(k - 1)] < v[at(k + 1)]);
        let previous_k = if down { k + 1 } else { k - 1 };
        let previous_x = if d == 0 { 0 } else { v[at(previous_k)] };
        let previous_y = if d == 0 { 0 } else { previous_x - previous_k };
        while x > previous_x && y > previous_y {
            x -= 1;
            y -= 1;
            steps.push(Step::Same(x as usize, y as usize));
        }
        if d > 0 {
            if down {
                steps.push(Step::Added(previous_y as usize));
            } else {
                steps.push(Step::Removed(previous_x as usize));
            }
            x = previous_x;
            y = previous_y;
        }
    }
    steps.reverse();
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_changed_line_with_context() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let new = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        assert_eq!(
            unified_diff(old, new, "a/f", "b/f"),
            "--- a/f\n+++ b/f\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
        assert_eq!(unified_diff(old, old, "a/f", "b/f"), "");
    }

    #[test]
    fn distant_changes_make_two_hunks_and_crlf_and_missing_newline_show() {
        let old = "a\r\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk";
        let new = "A\r\nb\nc\nd\ne\nf\ng\nh\ni\nj\nK";
        assert_eq!(
            unified_diff(old, new, "x", "y"),
            "--- x\n+++ y\n@@ -1,4 +1,4 @@\n-a\r\n+A\r\n b\n c\n d\n@@ -8,4 +8,4 @@\n h\n i\n j\n-k\n\\ No newline at end \
             of file\n+K\n\\ No newline at end of file\n"
        );
    }

    #[test]
    fn insertions_and_deletions() {
        let steps = edit_script(&["a", "b", "c"], &["a", "x", "c", "d"]);
        assert_eq!(steps, [Step::Same(0, 0), Step::Removed(1), Step::Added(1), Step::Same(2, 2), Step::Added(3)]);
        assert_eq!(edit_script(&[], &["a"]), [Step::Added(0)]);
        assert_eq!(edit_script(&["a"], &[]), [Step::Removed(0)]);
    }
}
