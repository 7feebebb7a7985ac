//! Just enough shell reading for the rules: a `RUN` script split into simple commands
//! (at `&&`, `||`, `;`, `|`, `&`, new lines, parentheses, backquotes and `$(`), each a list
//! of words with quotes removed, leading `VAR=value` assignments and wrappers (`sudo`,
//! `env`, `time`, `if`, `then`, ...) dropped, and the program named by its base name
//! (`/usr/bin/apt-get` is `apt-get`). No expansion: `$VAR` stays as written.

use crate::dockerfile::CommandLine;
use crate::dockerfile::instruction::Run;

/// The script a `RUN` gives its shell: the command line, and the heredoc bodies after it.
pub(crate) fn run_script(run: &Run) -> String {
    let mut script = match &run.command {
        CommandLine::Shell(text) => text.clone(),
        CommandLine::Exec(args) => {
            let shell = args.first().map(|program| base_name(program));
            if args.len() >= 3
                && matches!(shell, Some("sh" | "bash" | "ash" | "dash" | "zsh"))
                && args[1] == "-c"
            {
                args[2].clone()
            } else {
                args.join(" ")
            }
        }
    };
    for heredoc in &run.heredocs {
        script.push('\n');
        script.push_str(&heredoc.body());
    }
    script
}

/// The last path component of a program (`/usr/bin/apt-get` → `apt-get`).
pub(crate) fn base_name(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// The simple commands of `script`, each as words with the program first.
pub(crate) fn commands(script: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = script.chars().collect();
    let mut commands: Vec<Vec<String>> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let end_word = |word: &mut String, in_word: &mut bool, words: &mut Vec<String>| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    let mut position = 0;
    while position < chars.len() {
        let ch = chars[position];
        match ch {
            '\\' => {
                match chars.get(position + 1) {
                    Some('\n') => {}
                    Some(next) => {
                        word.push(*next);
                        in_word = true;
                    }
                    None => {}
                }
                position += 2;
                continue;
            }
            '\'' => {
                in_word = true;
                position += 1;
                while position < chars.len() && chars[position] != '\'' {
                    word.push(chars[position]);
                    position += 1;
                }
            }
            '"' => {
                in_word = true;
                position += 1;
                while position < chars.len() && chars[position] != '"' {
                    if chars[position] == '\\' && position + 1 < chars.len() {
                        position += 1;
                    }
                    word.push(chars[position]);
                    position += 1;
                }
            }
            '#' if !in_word => {
                while position < chars.len() && chars[position] != '\n' {
                    position += 1;
                }
                continue;
            }
            '\n' | ';' | '&' | '|' | '(' | ')' | '`' => {
                end_word(&mut word, &mut in_word, &mut words);
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            '$' if chars.get(position + 1) == Some(&'(') => {
                end_word(&mut word, &mut in_word, &mut words);
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
                position += 1;
            }
            ch if ch.is_whitespace() => end_word(&mut word, &mut in_word, &mut words),
            ch => {
                word.push(ch);
                in_word = true;
            }
        }
        position += 1;
    }
    end_word(&mut word, &mut in_word, &mut words);
    if !words.is_empty() {
        commands.push(words);
    }
    commands.into_iter().filter_map(simple).collect()
}

/// Drops assignments and wrappers in front of the program; names it by its base name.
fn simple(words: Vec<String>) -> Option<Vec<String>> {
    let mut start = 0;
    while let Some(word) = words.get(start) {
        let is_assignment = word.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                && !name.starts_with(|ch: char| ch.is_ascii_digit())
        });
        let is_wrapper = matches!(
            word.as_str(),
            "sudo"
                | "env"
                | "time"
                | "nohup"
                | "exec"
                | "command"
                | "if"
                | "then"
                | "else"
                | "elif"
                | "do"
                | "while"
                | "until"
                | "!"
                | "{"
                | "}"
        );
        let after = |index: usize, what: &str| index > 0 && words[index - 1] == what;
        let is_wrapper_flag = (word.starts_with('-')
            && (after(start, "sudo") || after(start, "env")))
            || (after(start, "-u") && after(start - 1, "sudo"));
        if is_assignment || is_wrapper || is_wrapper_flag {
            start += 1;
        } else {
            break;
        }
    }
    let mut command: Vec<String> = words.into_iter().skip(start).collect();
    let first = command.first_mut()?;
    *first = base_name(first).to_owned();
    Some(command)
}

/// The first word after the program that is not an option (`apt-get -y install` →
/// `install`), with its index; `takes_value` lists options whose value is the next word.
pub(crate) fn subcommand<'w>(
    command: &'w [String],
    takes_value: &[&str],
) -> Option<(usize, &'w str)> {
    let mut index = 1;
    while let Some(word) = command.get(index) {
        if word.starts_with('-') {
            index += if takes_value.contains(&word.as_str()) {
                2
            } else {
                1
            };
            continue;
        }
        return Some((index, word.as_str()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(script: &str) -> Vec<String> {
        commands(script).into_iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn splits_at_operators_and_removes_quotes() {
        assert_eq!(
            words(
                "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y 'a b' \"c\"; rm -rf /x"
            ),
            ["apt-get update", "apt-get install -y a b c", "rm -rf /x"]
        );
        assert_eq!(
            words("set -e\nif true; then sudo -u x /usr/bin/make all | tee log; fi # note"),
            ["set -e", "true", "make all", "tee log", "fi"]
        );
        assert_eq!(words("echo $(go build ./...)"), ["echo", "go build ./..."]);
        assert_eq!(words("a \\\n  b"), ["a b"]);
    }

    #[test]
    fn finds_the_subcommand_after_options() {
        let command: Vec<String> = ["apt-get", "-o", "x=y", "-y", "install", "curl"]
            .map(String::from)
            .to_vec();
        assert_eq!(subcommand(&command, &["-o"]), Some((4, "install")));
    }
}
