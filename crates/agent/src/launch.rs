//! Launch templates: an assignment rendered as an argv and an environment, never as a shell
//! string. Extra arguments are appended one argv item each, verbatim.

use std::path::{Path, PathBuf};

use maas_model::contract::{Assignment, Engine};

/// Where the engines' programs are.
#[derive(Clone, Debug)]
pub struct Tools {
    /// `maas-engine`.
    pub maas_engine: PathBuf,
    /// `llama-server`, when it is on `PATH`.
    pub llama_server: Option<PathBuf>,
    /// The Python interpreter with `xllamacpp` installed (used when there is no
    /// `llama-server`).
    pub llama_python: String,
    /// The launcher script over `xllamacpp`.
    pub llama_launcher: PathBuf,
}

/// A process to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Program.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment added to the agent's.
    pub env: Vec<(String, String)>,
}

/// Where the model is for the engine: a file or directory on this node, or a hub id the engine
/// fetches itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelLocation {
    /// A local path.
    Path(PathBuf),
    /// A Hugging Face or ModelScope repository id.
    Hub(String),
}

impl ModelLocation {
    fn as_arg(&self) -> String {
        match self {
            Self::Path(p) => p.display().to_string(),
            Self::Hub(id) => id.clone(),
        }
    }
}

/// The first program named `name` on `PATH`.
#[must_use]
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn local(model: &ModelLocation, engine: &str) -> Result<String, String> {
    match model {
        ModelLocation::Path(p) => Ok(p.display().to_string()),
        ModelLocation::Hub(id) => Err(format!(
            "the {engine} engine needs a model file on the node (a local path or a URL), not the hub id {id}"
        )),
    }
}

/// Renders `a` for `host:port`.
///
/// # Errors
/// When the engine cannot run this model (a hub id for a file-based engine).
pub fn render(
    a: &Assignment,
    host: &str,
    port: u16,
    model: &ModelLocation,
    tools: &Tools,
) -> Result<Launch, String> {
    let name = a
        .served_names
        .first()
        .cloned()
        .unwrap_or_else(|| a.deployment.clone());
    let port_s = port.to_string();
    let (program, mut args): (String, Vec<String>) = match a.engine {
        Engine::Builtin => {
            let path = local(model, "builtin")?;
            let mut args = vec!["--listen".to_owned(), format!("{host}:{port}")];
            if a.embeddings {
                args.extend([
                    "--embedding-model".into(),
                    path,
                    "--embedding-name".into(),
                    name,
                ]);
            } else {
                args.extend(["--chat-model".into(), path, "--chat-name".into(), name]);
            }
            (tools.maas_engine.display().to_string(), args)
        }
        Engine::LlamaCpp => {
            let path = local(model, "llama.cpp")?;
            let mut args = vec![
                "--host".to_owned(),
                host.to_owned(),
                "--port".into(),
                port_s,
                "--model".into(),
                path,
                "--alias".into(),
                name,
            ];
            if a.embeddings {
                args.push("--embedding".into());
            }
            match &tools.llama_server {
                Some(server) => (server.display().to_string(), args),
                None => {
                    args.insert(0, tools.llama_launcher.display().to_string());
                    (tools.llama_python.clone(), args)
                }
            }
        }
        Engine::Vllm => {
            let mut args = vec![
                "serve".to_owned(),
                model.as_arg(),
                "--host".into(),
                host.to_owned(),
                "--port".into(),
                port_s,
                "--served-model-name".into(),
            ];
            args.extend(a.served_names.iter().cloned());
            ("vllm".to_owned(), args)
        }
        Engine::Sglang => (
            "python3".to_owned(),
            vec![
                "-m".to_owned(),
                "sglang.launch_server".into(),
                "--model-path".into(),
                model.as_arg(),
                "--host".into(),
                host.to_owned(),
                "--port".into(),
                port_s,
                "--served-model-name".into(),
                name,
            ],
        ),
        Engine::Custom => {
            let command = a
                .command
                .clone()
                .ok_or_else(|| "a custom engine needs its command".to_owned())?;
            // The command is the script; the extra arguments are its $1, $2, …
            (
                "bash".to_owned(),
                vec!["-lc".into(), command, "maas-custom".into()],
            )
        }
    };
    args.extend(a.args.iter().cloned());
    let mut env = vec![
        ("PORT".to_owned(), port.to_string()),
        ("HOST".to_owned(), host.to_owned()),
        ("MODEL_PATH".to_owned(), model.as_arg()),
        (
            "CUDA_VISIBLE_DEVICES".to_owned(),
            a.gpus
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    env.extend(a.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(Launch { program, args, env })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use maas_model::contract::ModelSource;

    use super::*;

    fn assignment(engine: Engine) -> Assignment {
        Assignment {
            instance_id: uuid::Uuid::nil(),
            deployment_id: uuid::Uuid::nil(),
            deployment: "chat".into(),
            generation: 1,
            engine,
            model: "smollm2".into(),
            source: ModelSource::Local {
                path: "/models/smol.gguf".into(),
            },
            embeddings: false,
            command: None,
            args: vec!["; touch /tmp/pwned".into(), "--flag".into()],
            env: BTreeMap::from([("EXTRA".into(), "1".into())]),
            gpus: vec![0, 2],
            served_names: vec!["smol".into(), "smol-alias".into()],
        }
    }

    fn tools(llama_server: bool) -> Tools {
        Tools {
            maas_engine: "/opt/maas-engine".into(),
            llama_server: llama_server.then(|| PathBuf::from("/usr/bin/llama-server")),
            llama_python: "/venv/bin/python".into(),
            llama_launcher: "/opt/xllamacpp-server.py".into(),
        }
    }

    fn path() -> ModelLocation {
        ModelLocation::Path("/models/smol.gguf".into())
    }

    #[test]
    fn every_template_is_an_argv_with_the_extra_arguments_verbatim() {
        let builtin = render(
            &assignment(Engine::Builtin),
            "127.0.0.1",
            41000,
            &path(),
            &tools(false),
        )
        .unwrap();
        assert_eq!(builtin.program, "/opt/maas-engine");
        assert_eq!(
            builtin.args,
            [
                "--listen",
                "127.0.0.1:41000",
                "--chat-model",
                "/models/smol.gguf",
                "--chat-name",
                "smol",
                "; touch /tmp/pwned",
                "--flag"
            ]
        );
        assert!(
            builtin
                .env
                .contains(&("CUDA_VISIBLE_DEVICES".into(), "0,2".into()))
        );
        assert!(builtin.env.contains(&("EXTRA".into(), "1".into())));

        let launcher = render(
            &assignment(Engine::LlamaCpp),
            "0.0.0.0",
            41001,
            &path(),
            &tools(false),
        )
        .unwrap();
        assert_eq!(launcher.program, "/venv/bin/python");
        assert_eq!(launcher.args[0], "/opt/xllamacpp-server.py");
        let server = render(
            &assignment(Engine::LlamaCpp),
            "0.0.0.0",
            41001,
            &path(),
            &tools(true),
        )
        .unwrap();
        assert_eq!(server.program, "/usr/bin/llama-server");
        assert_eq!(&server.args[..4], ["--host", "0.0.0.0", "--port", "41001"]);

        let hub = ModelLocation::Hub("Qwen/Qwen2.5-0.5B".into());
        let vllm = render(
            &assignment(Engine::Vllm),
            "0.0.0.0",
            8000,
            &hub,
            &tools(false),
        )
        .unwrap();
        assert_eq!(vllm.program, "vllm");
        assert_eq!(&vllm.args[..2], ["serve", "Qwen/Qwen2.5-0.5B"]);
        assert!(
            vllm.args
                .windows(3)
                .any(|w| w == ["--served-model-name", "smol", "smol-alias"])
        );
        let sglang = render(
            &assignment(Engine::Sglang),
            "0.0.0.0",
            8000,
            &hub,
            &tools(false),
        )
        .unwrap();
        assert_eq!(&sglang.args[..2], ["-m", "sglang.launch_server"]);
        assert!(render(&assignment(Engine::Builtin), "h", 1, &hub, &tools(false)).is_err());

        let mut custom = assignment(Engine::Custom);
        custom.command = Some("exec my-server --port \"$PORT\"".into());
        let custom = render(&custom, "0.0.0.0", 9000, &path(), &tools(false)).unwrap();
        assert_eq!(custom.program, "bash");
        assert_eq!(
            custom.args,
            [
                "-lc",
                "exec my-server --port \"$PORT\"",
                "maas-custom",
                "; touch /tmp/pwned",
                "--flag"
            ]
        );
        assert!(custom.env.contains(&("PORT".into(), "9000".into())));
        assert!(
            custom
                .env
                .contains(&("MODEL_PATH".into(), "/models/smol.gguf".into()))
        );
    }
}
