//! Tests of the instruction types, their parsing and their expansion.

use rstest::rstest;

use super::values::check_port_spec;
use super::*;
use crate::dockerfile::expand::Expander;
use crate::dockerfile::syntax::parse;

fn typed(text: &str) -> Result<Stages, DockerfileError> {
    stages(&parse(text)?)
}

fn only(text: &str) -> Instruction {
    let stages = typed(&format!("FROM scratch\n{text}")).unwrap();
    stages.stages[0].instructions[0].clone()
}

fn error(text: &str) -> DockerfileError {
    typed(text).unwrap_err()
}

#[test]
fn from_forms() {
    let stages =
        typed("ARG V=1\nFROM --platform=$BUILDPLATFORM golang:$V AS Build\nFROM build\n").unwrap();
    assert_eq!(stages.meta_args.len(), 1);
    let from = &stages.stages[0].from;
    assert_eq!(from.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(from.image, "golang:$V");
    assert_eq!(from.name.as_deref(), Some("build"));
    assert_eq!(stages.stages[1].index, 1);
    assert_eq!(stages.find("BUILD").unwrap().index, 0);
    assert_eq!(stages.find("1").unwrap().index, 1);
}

#[rstest]
#[case("FROM a b", "one or three")]
#[case("FROM a AS 1x", "invalid stage name")]
#[case("FROM --platform a", "needs a value")]
#[case("FROM --plat=x a", "unknown flag: --plat")]
fn from_errors(#[case] text: &str, #[case] message: &str) {
    let error = error(text);
    assert!(error.to_string().contains(message), "{error}");
}

#[test]
fn run_forms_and_flags() {
    let Instruction::Run(run) =
        only("RUN --mount=type=cache,target=/c --network=none --security=insecure make")
    else {
        panic!()
    };
    assert_eq!(run.command, CommandLine::Shell("make".into()));
    assert_eq!(run.mounts.len(), 1);
    assert_eq!(run.network, Some(Network::None));
    assert_eq!(run.security, Some(Security::Insecure));
    let Instruction::Run(run) = only("RUN [\"make\", \"all\"]") else {
        panic!()
    };
    assert_eq!(
        run.command,
        CommandLine::Exec(vec!["make".into(), "all".into()])
    );
    let Instruction::Run(run) = only("RUN <<EOF\necho hi\nEOF") else {
        panic!()
    };
    assert_eq!(run.heredocs[0].content, "echo hi\n");
    // RUN in shell form with brackets is fine: the shell runs it.
    let Instruction::Run(run) = only("RUN [ -f x ] && echo yes") else {
        panic!()
    };
    assert_eq!(
        run.command,
        CommandLine::Shell("[ -f x ] && echo yes".into())
    );
}

#[rstest]
#[case("RUN --network=wifi x", "not default, none or host")]
#[case("RUN --security=lax x", "not sandbox or insecure")]
#[case("RUN --mount=type=bind x", "need a target")]
#[case("RUN --mount x", "needs a value")]
#[case("RUN --network=none --network=host x", "given twice")]
#[case("RUN --chmod=755 x", "unknown flag: --chmod")]
#[case("RUN []", "at least one argument")]
fn run_errors(#[case] text: &str, #[case] message: &str) {
    let error = error(&format!("FROM a\n{text}"));
    assert!(error.to_string().contains(message), "{error}");
    assert_eq!(error.line, Some(2));
}

#[test]
fn cmd_entrypoint_shell() {
    assert_eq!(
        only("CMD [\"a\"]"),
        Instruction::Cmd(Cmd {
            span: Span::new(2, 2),
            command: CommandLine::Exec(vec!["a".into()])
        })
    );
    assert!(matches!(
        only("CMD echo hi"),
        Instruction::Cmd(Cmd {
            command: CommandLine::Shell(_),
            ..
        })
    ));
    assert!(
        matches!(only("CMD []"), Instruction::Cmd(Cmd { command: CommandLine::Exec(v), .. }) if v.is_empty())
    );
    assert!(matches!(
        only("ENTRYPOINT [\"/bin/app\"]"),
        Instruction::Entrypoint(_)
    ));
    let Instruction::Shell(shell) = only("SHELL [\"/bin/bash\", \"-c\"]") else {
        panic!()
    };
    assert_eq!(shell.shell, ["/bin/bash", "-c"]);
}

#[rstest]
#[case("SHELL /bin/sh -c", "JSON form")]
#[case("SHELL ['sh', '-c']", "invalid JSON array")]
#[case("CMD [\"a\", 1]", "strings only")]
#[case("CMD --x a", "unknown flag: --x")]
fn command_errors(#[case] text: &str, #[case] message: &str) {
    let error = error(&format!("FROM a\n{text}"));
    assert!(error.to_string().contains(message), "{error}");
}

#[rstest]
#[case("HEALTHCHECK CMD [ -f /tmp/ready ]")]
#[case("HEALTHCHECK CMD [ \"$STATUS\" = \"ok\" ]")]
#[case("CMD [ -n \"$A\" ] && exec app")]
#[case("ENTRYPOINT [\"a\" \"b\"]")]
fn shell_tests_with_brackets_are_shell_form(#[case] text: &str) {
    typed(&format!("FROM a\n{text}")).unwrap();
}

#[test]
fn invalid_json_has_a_hint() {
    let error = error("FROM a\nSHELL ['sh', '-c']");
    assert!(
        error
            .to_string()
            .contains("hint: exec form is a JSON array of double-quoted strings"),
        "{error}"
    );
}

#[test]
fn key_value_instructions() {
    let Instruction::Env(env) = only("ENV A=1 B=\"two words\"") else {
        panic!()
    };
    assert_eq!(
        env.variables[1],
        KeyValue {
            key: "B".into(),
            value: "\"two words\"".into()
        }
    );
    let Instruction::Env(env) = only("ENV A one two") else {
        panic!()
    };
    assert_eq!(env.variables[0].value, "one two");
    let Instruction::Label(label) = only("LABEL a=b c=d") else {
        panic!()
    };
    assert_eq!(label.labels.len(), 2);
    assert!(error("FROM a\nENV A").to_string().contains("two arguments"));
    assert!(
        error("FROM a\nENV A=1 B")
            .to_string()
            .contains("can't find =")
    );
    assert!(error("FROM a\nLABEL =x").to_string().contains("blank"));
}

#[test]
fn simple_instructions() {
    assert!(matches!(only("MAINTAINER me"), Instruction::Maintainer(m) if m.name == "me"));
    assert!(
        matches!(only("EXPOSE 80 53/udp"), Instruction::Expose(e) if e.ports == ["80", "53/udp"])
    );
    assert!(
        matches!(only("VOLUME [\"/a\", \"/b\"]"), Instruction::Volume(v) if v.paths.len() == 2)
    );
    assert!(matches!(only("VOLUME /a /b"), Instruction::Volume(v) if v.paths.len() == 2));
    assert!(matches!(only("USER app:app"), Instruction::User(u) if u.user == "app:app"));
    assert!(matches!(only("WORKDIR /src"), Instruction::Workdir(w) if w.path == "/src"));
    assert!(
        matches!(only("STOPSIGNAL SIGKILL"), Instruction::Stopsignal(s) if s.signal == "SIGKILL")
    );
    for text in [
        "USER",
        "WORKDIR",
        "EXPOSE",
        "VOLUME",
        "STOPSIGNAL",
        "MAINTAINER",
        "LABEL",
    ] {
        assert!(
            error(&format!("FROM a\n{text}"))
                .to_string()
                .contains("argument"),
            "{text}"
        );
    }
    assert!(
        error("FROM a\nVOLUME [\"\"]")
            .to_string()
            .contains("empty string")
    );
}

#[test]
fn copy_and_add_flags() {
    let Instruction::Copy(copy) = only(
        "COPY --from=build --chown=1000:1000 --chmod=0644 --link --parents --exclude=*.md --exclude=.git a b /dst/",
    ) else {
        panic!()
    };
    assert_eq!(copy.from.as_deref(), Some("build"));
    assert_eq!(copy.chown.as_deref(), Some("1000:1000"));
    assert_eq!(copy.chmod, Some(Chmod::Octal(0o644)));
    assert!(copy.link && copy.parents);
    assert_eq!(copy.excludes, ["*.md", ".git"]);
    assert_eq!(
        copy.sources,
        [Source::Path("a".into()), Source::Path("b".into())]
    );
    assert_eq!(copy.destination, "/dst/");
    let digest = format!("sha256:{}", "a".repeat(64));
    let Instruction::Add(add) = only(&format!(
        "ADD --checksum={digest} --keep-git-dir --unpack=false --chmod=u+x,go-w --link=false https://x/y.tar /y"
    )) else {
        panic!()
    };
    assert_eq!(add.checksum.as_deref(), Some(digest.as_str()));
    assert!(add.keep_git_dir && !add.link);
    assert_eq!(add.unpack, Some(false));
    assert_eq!(add.chmod, Some(Chmod::Symbolic("u+x,go-w".into())));
    let Instruction::Copy(copy) = only("COPY [\"a b\", \"/c d/\"]") else {
        panic!()
    };
    assert_eq!(copy.destination, "/c d/");
}

#[test]
fn onbuild_expression_keeps_heredoc_bodies() {
    let Instruction::Onbuild(onbuild) = only("ONBUILD RUN <<EOF\necho hi\nEOF") else {
        panic!()
    };
    assert_eq!(onbuild.expression, "RUN <<EOF\necho hi\nEOF");
}

#[test]
fn heredoc_sources_are_found_by_name_and_not_a_destination() {
    let Instruction::Copy(copy) = only("COPY a <<two <<-one /dst/\nsecond\ntwo\n\tfirst\n\tone")
    else {
        panic!()
    };
    assert_eq!(copy.sources[0], Source::Path("a".into()));
    assert!(matches!(&copy.sources[1], Source::Inline(h) if h.content == "second\n"));
    assert!(matches!(&copy.sources[2], Source::Inline(h) if h.body() == "first\n"));
    let error = error("FROM a\nCOPY a <<EOF\nx\nEOF");
    assert!(
        error.to_string().contains("heredoc as a destination"),
        "{error}"
    );
}

#[test]
fn copy_heredoc_is_an_inline_file() {
    let Instruction::Copy(copy) = only("COPY <<EOF /etc/motd\nhello\nEOF") else {
        panic!()
    };
    assert!(matches!(&copy.sources[0], Source::Inline(h) if h.content == "hello\n"));
}

#[rstest]
#[case("COPY a", "at least two arguments")]
#[case("COPY --chmod=999 a b", "octal")]
#[case("COPY --chmod=rwx a b", "not a mode")]
#[case("COPY --chown=:g a b", "user:group")]
#[case("COPY --link=maybe a b", "true or false")]
#[case("COPY --from= a b", "needs a stage")]
#[case("COPY --checksum=sha256:00 a b", "unknown flag: --checksum")]
#[case("COPY --unpack a b", "unknown flag: --unpack")]
#[case("ADD --from=x a b", "unknown flag: --from")]
#[case("ADD --parents a b", "unknown flag: --parents")]
fn copy_add_errors(#[case] text: &str, #[case] message: &str) {
    let error = error(&format!("FROM a\n{text}"));
    assert!(error.to_string().contains(message), "{error}");
}

#[test]
fn args() {
    let Instruction::Arg(arg) = only("ARG A B=2 C=") else {
        panic!()
    };
    assert_eq!(
        arg.args[0],
        ArgDeclaration {
            name: "A".into(),
            default: None
        }
    );
    assert_eq!(arg.args[1].default.as_deref(), Some("2"));
    assert_eq!(arg.args[2].default.as_deref(), Some(""));
    for bad in ["1A", "A-B", "=x", "a.b"] {
        let error = error(&format!("FROM a\nARG {bad}"));
        assert!(
            matches!(error.kind, ErrorKind::BadArgName { .. }),
            "{bad}: {error}"
        );
    }
}

#[test]
fn onbuild() {
    let Instruction::Onbuild(onbuild) = only("ONBUILD RUN make") else {
        panic!()
    };
    assert_eq!(onbuild.expression, "RUN make");
    assert!(matches!(*onbuild.instruction, Instruction::Run(_)));
    assert!(
        error("FROM a\nONBUILD ONBUILD RUN x")
            .to_string()
            .contains("isn't allowed")
    );
    assert!(
        error("FROM a\nONBUILD FROM x")
            .to_string()
            .contains("isn't allowed")
    );
    assert!(
        error("FROM a\nONBUILD COPY --bad a b")
            .to_string()
            .contains("--bad")
    );
}

#[test]
fn healthcheck() {
    let Instruction::Healthcheck(check) = only(
        "HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=0s --start-interval=2s --retries=3 CMD curl -f http://localhost/",
    ) else {
        panic!()
    };
    let Health::Check(check) = check.health else {
        panic!()
    };
    assert_eq!(check.interval, Some(Duration::from_secs(90)));
    assert_eq!(check.timeout, Some(Duration::from_millis(500)));
    assert_eq!(check.start_period, Some(Duration::ZERO));
    assert_eq!(check.retries, Some(3));
    assert_eq!(
        check.command,
        CommandLine::Shell("curl -f http://localhost/".into())
    );
    assert!(matches!(
        only("HEALTHCHECK NONE"),
        Instruction::Healthcheck(Healthcheck {
            health: Health::None,
            ..
        })
    ));
    assert!(matches!(
        only("HEALTHCHECK CMD [\"true\"]"),
        Instruction::Healthcheck(_)
    ));
}

#[rstest]
#[case("HEALTHCHECK", "requires NONE or CMD")]
#[case("HEALTHCHECK NONE x", "takes no arguments")]
#[case("HEALTHCHECK --retries=1 NONE", "takes no flags")]
#[case("HEALTHCHECK CMD", "missing command")]
#[case("HEALTHCHECK PING x", "unknown type")]
#[case("HEALTHCHECK --interval=5 CMD x", "not a duration")]
#[case("HEALTHCHECK --interval=1us CMD x", "less than 1ms")]
#[case("HEALTHCHECK --retries=-1 CMD x", "number of retries")]
#[case("HEALTHCHECK --period=1s CMD x", "unknown flag: --period")]
fn healthcheck_errors(#[case] text: &str, #[case] message: &str) {
    let error = error(&format!("FROM a\n{text}"));
    assert!(error.to_string().contains(message), "{error}");
}

#[test]
fn structure_errors() {
    let error = error("FROM a\nRUNN x");
    assert_eq!(
        error.to_string(),
        "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"
    );
    assert_eq!(error.line, Some(2));
    let error = typed("ARG X\nRUN x").unwrap_err();
    assert!(matches!(
        error.kind,
        ErrorKind::InstructionBeforeFrom { .. }
    ));
    assert_eq!(error.line, Some(2));
    assert_eq!(typed("ARG X\n").unwrap_err().kind, ErrorKind::MissingFrom);
}

#[rstest]
#[case("80")]
#[case("80/tcp")]
#[case("53/UDP")]
#[case("9/sctp")]
#[case("80/")]
#[case("0")]
#[case("65535")]
#[case("8000-8010/udp")]
#[case("8080:80")]
#[case("127.0.0.1:8080:80/tcp")]
#[case("[::1]:8080:80")]
#[case("8000-8010:80")]
fn expose_accepts_what_buildkit_accepts(#[case] spec: &str) {
    assert_eq!(check_port_spec(spec), Ok(()), "{spec}");
}

#[rstest]
#[case("80/xyz", "invalid proto: xyz")]
#[case("80/http", "invalid proto: http")]
#[case("70000", "invalid containerPort: 70000")]
#[case("65536/udp", "invalid containerPort: 65536")]
#[case("-1", "invalid containerPort: -1")]
#[case("+80", "invalid containerPort: +80")]
#[case("http", "invalid containerPort: http")]
#[case("90-80", "invalid containerPort: 90-80")]
#[case("80-70000", "invalid containerPort: 80-70000")]
#[case("80-", "invalid containerPort: 80-")]
#[case("/tcp", "no port specified")]
#[case("99999:80", "invalid hostPort: 99999")]
#[case("8000-8001:80-82", "invalid ranges")]
#[case("nothost:8080:80", "invalid IP address: nothost")]
fn expose_rejects_what_buildkit_rejects(#[case] spec: &str, #[case] message: &str) {
    let error = check_port_spec(spec).unwrap_err();
    assert!(error.starts_with(message), "{spec}: {error}");
}

#[test]
fn exposed_ports_are_what_buildkit_writes_in_the_config() {
    let ports = |spec: &str| exposed_ports(spec).unwrap();
    assert_eq!(ports("80"), ["80/tcp"]);
    assert_eq!(ports("53/UDP"), ["53/udp"]);
    assert_eq!(ports("8080:80/tcp"), ["80/tcp"]);
    assert_eq!(
        ports("8000-8002/Sctp"),
        ["8000/sctp", "8001/sctp", "8002/sctp"]
    );
    assert!(exposed_ports("80/xyz").is_err());
}

#[test]
fn expose_is_checked_once_expanded() {
    let expander = Expander::new('\\');
    let vars: Vec<(String, String)> = vec![
        ("P".into(), "70000".into()),
        ("OK".into(), "80 443/tcp".into()),
    ];
    let error = typed("FROM a\nEXPOSE 22 $P\n").unwrap().stages[0].instructions[0]
        .expand(&expander, &vars)
        .unwrap_err();
    assert_eq!(error.line, Some(2));
    assert_eq!(
        error.to_string(),
        "Dockerfile:2: EXPOSE: invalid containerPort: 70000"
    );
    let Instruction::Expose(expose) = only("EXPOSE $OK").expand(&expander, &vars).unwrap() else {
        panic!()
    };
    assert_eq!(expose.ports, ["80", "443/tcp"]);
}

#[test]
fn expansion_of_copy_and_mounts() {
    let vars: Vec<(String, String)> = vec![
        ("D".into(), "/app".into()),
        ("U".into(), "1000".into()),
        ("M".into(), "755".into()),
    ];
    let expander = Expander::new('\\');
    let Instruction::Copy(copy) = only("COPY --chown=$U --chmod=$M [\"$D/a b\", \"${D}/\"]")
        .expand(&expander, &vars)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(copy.sources, [Source::Path("/app/a b".into())]);
    assert_eq!(copy.destination, "/app/");
    assert_eq!(copy.chown.as_deref(), Some("1000"));
    assert_eq!(copy.chmod, Some(Chmod::Octal(0o755)));
    let Instruction::Run(run) = only("RUN --mount=type=cache,target=/c,uid=$U echo $D")
        .expand(&expander, &vars)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(run.mounts[0].uid, Some(1000));
    assert_eq!(run.command, CommandLine::Shell("echo $D".into()));
    assert!(
        only("WORKDIR ${X:?must be set}")
            .expand(&expander, &vars)
            .unwrap_err()
            .to_string()
            .contains("X: must be set")
    );
}

/// Docker reads a command that looks like a JSON array but is not one as shell form
/// (BuildKit's testInvalidJSONCommands): the shell runs the text.
#[rstest]
#[case("CMD ['a', 'b']", "['a', 'b']")]
#[case("ENTRYPOINT [\"a\", \"b\",]", "[\"a\", \"b\",]")]
#[case("ENTRYPOINT []random string", "[]random string")]
#[case(
    "RUN [\"echo\", \"hello\"]this is invalid",
    "[\"echo\", \"hello\"]this is invalid"
)]
#[case("CMD [\"C:\\path\", \"x\"]", "[\"C:\\path\", \"x\"]")]
fn json_that_does_not_parse_is_shell_form(#[case] text: &str, #[case] script: &str) {
    let shell = CommandLine::Shell(script.to_owned());
    match only(text) {
        Instruction::Cmd(cmd) => assert_eq!(cmd.command, shell),
        Instruction::Entrypoint(entrypoint) => assert_eq!(entrypoint.command, shell),
        Instruction::Run(run) => assert_eq!(run.command, shell),
        other => panic!("{other:?}"),
    }
    let Instruction::Healthcheck(check) = only("HEALTHCHECK CMD ['a']") else {
        panic!()
    };
    let Health::Check(check) = check.health else {
        panic!()
    };
    assert_eq!(check.command, CommandLine::Shell("['a']".into()));
}

/// BuildKit runs a bare `RUN` as `/bin/sh -c ''` (an empty script); `RUN []` has no program.
#[test]
fn a_bare_run_is_an_empty_shell_script() {
    let Instruction::Run(run) = only("RUN") else {
        panic!()
    };
    assert_eq!(run.command, CommandLine::Shell(String::new()));
    let Instruction::Run(run) = only("RUN --network=none") else {
        panic!()
    };
    assert_eq!(run.command, CommandLine::Shell(String::new()));
    let Instruction::Run(run) = only("RUN \"\"") else {
        panic!()
    };
    assert_eq!(run.command, CommandLine::Shell("\"\"".into()));
}

/// BuildKit warns about a duplicated stage name (`DuplicateStageName`) and builds; the name
/// then means the last stage of it.
#[test]
fn duplicate_stage_names_type_and_the_last_is_found() {
    let stages = typed("FROM a AS x\nFROM b AS X\nFROM c\n").unwrap();
    assert_eq!(stages.stages.len(), 3);
    assert_eq!(stages.find("x").unwrap().index, 1);
}

/// `RUN <<-EOF` gives the body without its lines' leading tabs (BuildKit's
/// testHeredocIndent); `RUN <<EOF` keeps them.
#[test]
fn run_heredoc_with_dash_strips_leading_tabs() {
    let Instruction::Run(run) = only("RUN <<-EOF\necho \"\n\tbar\" > /dest/bar-run\n\tEOF") else {
        panic!()
    };
    assert_eq!(run.heredocs[0].content, "echo \"\nbar\" > /dest/bar-run\n");
    let Instruction::Run(run) = only("RUN <<EOF\necho \"\n\tfoo\" > /dest/foo-run\nEOF") else {
        panic!()
    };
    assert_eq!(
        run.heredocs[0].content,
        "echo \"\n\tfoo\" > /dest/foo-run\n"
    );
    let Instruction::Run(run) = only("RUN <<-EOF sh > /out\n\techo a\nEOF") else {
        panic!()
    };
    assert_eq!(run.heredocs[0].content, "echo a\n");
}

/// An unquoted `COPY` heredoc word: variables and escapes are processed, quotes kept
/// (BuildKit's testCopyHeredocSpecialSymbols and testHeredocVarSubstitution); a quoted one
/// is taken as written.
#[test]
fn copy_heredoc_bodies_process_escapes_when_unquoted() {
    let vars: Vec<(String, String)> = vec![("name".into(), "world".into())];
    let body = |text: &str| {
        let Instruction::Copy(copy) = only(text).expand(&Expander::new('\\'), &vars).unwrap()
        else {
            panic!()
        };
        let Source::Inline(heredoc) = &copy.sources[0] else {
            panic!()
        };
        heredoc.content.clone()
    };
    assert_eq!(body("COPY <<EOF f\n\\\nEOF"), "\n");
    assert_eq!(body("COPY <<EOF f\n\\\\\nEOF"), "\\\n");
    assert_eq!(body("COPY <<EOF f\n\\$\nEOF"), "$\n");
    assert_eq!(
        body("COPY <<EOF f\n\"quotes in file\"\nEOF"),
        "\"quotes in file\"\n"
    );
    assert_eq!(body("COPY <<\"EOF\" f\n\\\nEOF"), "\\\n");
    assert_eq!(body("COPY <<\"EOF\" f\n\\\\\nEOF"), "\\\\\n");
    assert_eq!(body("COPY <<\"EOF\" f\n\\$\nEOF"), "\\$\n");
    assert_eq!(
        body("COPY <<EOF f\nHello '${name}'!\nEOF"),
        "Hello 'world'!\n"
    );
    assert_eq!(
        body("COPY <<'EOF' f\nHello \"${name}\"!\nEOF"),
        "Hello \"${name}\"!\n"
    );
    assert_eq!(body("COPY <<-EOF f\n\tbar\nEOF"), "bar\n");
}

/// BuildKit's testDockerfileCopyFromArgs and testMountFromError: no variables in a stage
/// reference, with BuildKit's messages.
#[rstest]
#[case(
    "COPY --from=$FOO /a /b",
    "COPY --from: variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
)]
#[case(
    "COPY --from=${FOO} /a /b",
    "variable expansion is not supported for --from"
)]
#[case(
    "RUN --mount=from=$FROM,target=/x true",
    "RUN --mount: 'from' doesn't support variable expansion, define alias stage instead"
)]
fn stage_references_take_no_variables(#[case] text: &str, #[case] message: &str) {
    let error = error(&format!("FROM a\nARG FOO=x\n{text}"));
    assert_eq!(error.line, Some(3));
    assert!(error.to_string().contains(message), "{error}");
}

/// BuildKit's testMountArg: a mount whose type comes from a variable is read once expanded.
#[test]
fn mount_type_from_a_variable() {
    let vars: Vec<(String, String)> = vec![
        ("MNT_TYPE".into(), "tmpfs".into()),
        ("MNT_PATH".into(), "/mytmp".into()),
    ];
    let Instruction::Run(run) = only("RUN --mount=type=$MNT_TYPE,target=$MNT_PATH true")
        .expand(&Expander::new('\\'), &vars)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        run.mounts[0].kind,
        crate::dockerfile::mount::MountType::Tmpfs
    );
    assert_eq!(run.mounts[0].target.as_deref(), Some("/mytmp"));
}

/// What BuildKit refuses once `ADD`/`COPY` sources are expanded (testAddChecksum's
/// NonHTTPSource, testAddGitSHA1's garbage checksum, the COPY source rules).
#[rstest]
#[case(
    "ADD --checksum=sha256:0000 file /x",
    "checksum requires HTTP(S) or Git sources"
)]
#[case(
    "ADD --checksum=sha256:aaaa http://h/a http://h/b /x/",
    "checksum can't be specified for multiple sources"
)]
#[case("ADD --checksum=md5:00 http://h/a /x", "is not a digest")]
#[case(
    "ADD --checksum=foobar ${REPO}#v1 /x",
    "ADD --checksum: invalid checksum foobar for Git URL, expected hex commit hash"
)]
#[case(
    "ADD --checksum=abc ${REPO}?commit=abd /x",
    "checksum mismatch \"abc\" != \"abd\""
)]
#[case(
    "ADD --keep-git-dir ${REPO}?keep-git-dir=false /x",
    "inconsistent keep-git-dir"
)]
#[case("ADD ${REPO}?ref=a#b /x", "ref conflicts")]
#[case("COPY ${REPO} /x", "COPY: source can't be a git ref for COPY")]
#[case("COPY http://h/file /x", "COPY: source can't be a URL for COPY")]
fn remote_sources_checked_once_expanded(#[case] text: &str, #[case] message: &str) {
    let vars: Vec<(String, String)> = vec![("REPO".into(), "https://h/repo.git".into())];
    let error = only(text).expand(&Expander::new('\\'), &vars).unwrap_err();
    assert!(error.to_string().contains(message), "{error}");
}

#[rstest]
#[case(&format!("ADD --checksum=sha256:{} http://h/a /x", "a".repeat(64)))]
#[case("ADD --checksum=ABCDEF0 ${REPO}#v1 /x")]
#[case(&format!("ADD --keep-git-dir --checksum={} ${{REPO}}#v1 /x", "a".repeat(40)))]
#[case("ADD ${REPO}?keep-git-dir=true /x")]
#[case("ADD github.com/moby/buildkit /x")]
fn remote_sources_buildkit_accepts(#[case] text: &str) {
    let vars: Vec<(String, String)> = vec![("REPO".into(), "https://h/repo.git".into())];
    only(text).expand(&Expander::new('\\'), &vars).unwrap();
}

/// The chmod messages BuildKit's testCopyInvalidChmod/testAddInvalidChmod check.
#[rstest]
#[case(
    "64a",
    "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777"
)]
#[case(
    "10000",
    "invalid chmod parameter: '10000'. it should be octal string and between 0 and 07777"
)]
#[case("999", "invalid chmod parameter: '999'")]
#[case("rwx", "\"rwx\" is not a mode")]
fn chmod_messages(#[case] mode: &str, #[case] message: &str) {
    for instruction in ["COPY", "ADD"] {
        let error = error(&format!("FROM a\n{instruction} --chmod={mode} a /b"));
        assert!(
            error
                .to_string()
                .starts_with(&format!("Dockerfile:2: {instruction} --chmod: {message}")),
            "{error}"
        );
    }
}

/// Unknown instructions and flags as BuildKit words them (testDockerfileInvalidInstruction,
/// testMountInvalid).
#[test]
fn unknown_names_as_buildkit_words_them() {
    assert_eq!(
        error("FROM a\nFNTRYPOINT [\"/bin/sh\"]").to_string(),
        "Dockerfile:2: unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)"
    );
    assert_eq!(
        error("FROM a\nrunn x").to_string(),
        "Dockerfile:2: unknown instruction: runn (did you mean run?)"
    );
    assert_eq!(
        error("FROM a\nRUN --mont=type=cache,target=/x true").to_string(),
        "Dockerfile:2: unknown flag: --mont (did you mean mount?)"
    );
    let error = error("FROM a\nCOPY --xyz a b");
    assert_eq!(
        error.to_string(),
        "Dockerfile:2: unknown flag: --xyz\nhint: valid flags for COPY: --from, --chown, --chmod, --link, --parents, --exclude"
    );
    assert_eq!(
        typed("ARG foo=bar").unwrap_err().to_string(),
        "Dockerfile:1: dockerfile contains no stages to build\nhint: start the stage with FROM <image>"
    );
}
