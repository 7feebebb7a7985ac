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
#[case("FROM --plat=x a", "does not take the flag --plat")]
#[case("FROM a AS x\nFROM b AS X", "duplicate stage name")]
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
#[case("RUN --chmod=755 x", "does not take the flag --chmod")]
#[case("RUN", "at least one argument")]
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
#[case("CMD ['a', 'b']", "invalid JSON array")]
#[case("ENTRYPOINT [\"a\", \"b\",]", "invalid JSON array")]
#[case("HEALTHCHECK CMD ['a']", "invalid JSON array")]
#[case("SHELL /bin/sh -c", "JSON form")]
#[case("SHELL ['sh', '-c']", "invalid JSON array")]
#[case("CMD [\"a\", 1]", "strings only")]
#[case("CMD --x a", "does not take the flag --x")]
#[case("CMD [\"C:\\path\", \"x\"]", "invalid JSON array")]
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
    let error = error("FROM a\nCMD ['a']");
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
#[case("COPY --checksum=sha256:00 a b", "does not take the flag --checksum")]
#[case("COPY --unpack a b", "does not take the flag --unpack")]
#[case("ADD --checksum=md5:00 a b", "not a digest")]
#[case("ADD --from=x a b", "does not take the flag --from")]
#[case("ADD --parents a b", "does not take the flag --parents")]
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
#[case("HEALTHCHECK --period=1s CMD x", "does not take the flag --period")]
fn healthcheck_errors(#[case] text: &str, #[case] message: &str) {
    let error = error(&format!("FROM a\n{text}"));
    assert!(error.to_string().contains(message), "{error}");
}

#[test]
fn structure_errors() {
    let error = error("FROM a\nRUNN x");
    assert_eq!(
        error.to_string(),
        "Dockerfile:2: unknown instruction \"RUNN\"\nhint: did you mean \"RUN\"?"
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
