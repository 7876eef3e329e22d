//! A private speech-dispatcher for the speech tests, started with a null audio output (the only
//! way it runs headless) and pointed at by the process's environment (`HOME`, `XDG_RUNTIME_DIR`,
//! `SPEECHD_ADDRESS`), so a test that uses it sets process-wide variables and must be alone in its
//! test binary.
//!
//! [`Server::start_recording`] gives it a generic output module instead: a small shell script that
//! "speaks" each utterance by sleeping (a time proportional to its length) and writes to a file
//! when each utterance started, with its language, rate and volume, and when it ended or was
//! cancelled (a watcher notices the script being killed). [`Server::start_mute`]'s module never
//! finishes an utterance: a speech-dispatcher whose audio output is broken.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A private speech-dispatcher in `root`; killed on drop.
pub struct Server {
    pidfile: PathBuf,
}

/// The output module.
#[derive(Debug, Clone, Copy)]
pub enum Module {
    /// speech-dispatcher's default, with a null audio output.
    Null,
    /// The recording script, this many milliseconds per character.
    Recorder { ms_per_char: u32 },
    /// A module that never finishes (broken audio).
    Mute,
}

/// One utterance the module said.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    pub text: String,
    pub language: String,
    pub rate: String,
    pub volume: String,
    /// Seconds since the epoch.
    pub start: f64,
    pub end: Option<f64>,
    pub cancelled: Option<f64>,
}

/// Reads what the recording module wrote.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub log: PathBuf,
}

impl Recorder {
    /// Every utterance so far, in the order they started.
    pub fn utterances(&self) -> Vec<Utterance> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out: Vec<(String, Utterance)> = vec![];
        for line in text.lines() {
            let mut f = line.splitn(4, ' ');
            let (what, t, pid) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            let t: f64 = t.parse().unwrap();
            let find = |out: &Vec<(String, Utterance)>| out.iter().rposition(|(p, _)| p == pid);
            match what {
                "start" => {
                    let rest = f.next().unwrap_or("");
                    let mut g = rest.splitn(4, ' ');
                    let mut field =
                        |name: &str| g.next().unwrap().strip_prefix(name).unwrap().to_string();
                    let (language, rate, volume) = (field("lang="), field("rate="), field("vol="));
                    let text = g.next().unwrap_or("").to_string();
                    out.push((
                        pid.to_string(),
                        Utterance {
                            text,
                            language,
                            rate,
                            volume,
                            start: t,
                            end: None,
                            cancelled: None,
                        },
                    ));
                }
                "end" => {
                    if let Some(i) = find(&out) {
                        out[i].1.end = Some(t);
                    }
                }
                "cancel" => {
                    if let Some(i) = find(&out) {
                        out[i].1.cancelled = Some(t);
                    }
                }
                other => panic!("unexpected recorder line {other:?}: {line}"),
            }
        }
        out.into_iter().map(|(_, u)| u).collect()
    }

    /// The utterance containing `text` (the last one that started), waiting up to `limit` for it
    /// to satisfy `done`.
    pub fn wait_for(
        &self,
        text: &str,
        limit: Duration,
        done: impl Fn(&Utterance) -> bool,
    ) -> Option<Utterance> {
        let t = Instant::now();
        loop {
            let u = self
                .utterances()
                .into_iter()
                .rev()
                .find(|u| u.text.contains(text));
            if let Some(u) = &u {
                if done(u) {
                    return Some(u.clone());
                }
            }
            if t.elapsed() > limit {
                return u;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Seconds since the epoch, as the recorder writes them.
pub fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn write_module(root: &Path, conf: &Path, module: Module) -> Option<Recorder> {
    let (script, recorder) = match module {
        Module::Null => return None,
        Module::Recorder { ms_per_char } => {
            let log = root.join("utterances.log");
            let done = root.join("done");
            std::fs::create_dir_all(&done).unwrap();
            let script = format!(
                r#"#!/bin/sh
# speak.sh TEXT LANGUAGE RATE VOLUME: "says" TEXT by sleeping {ms_per_char} ms per character
log='{log}'
n=$(printf %s "$1" | wc -m)
echo "start $(date +%s.%N) $$ lang=$2 rate=$3 vol=$4 $1" >> "$log"
me=$$
# a watcher outside the module's process group writes when the script was killed (cancelled);
# a killed script nobody reaps stays a zombie (state Z), which counts as gone
setsid sh -c "while s=\$(cut -d' ' -f3 /proc/$me/stat 2>/dev/null) && [ \"\$s\" != Z ]; do sleep 0.01; done; [ -e '{done}/$me' ] || echo cancel \$(date +%s.%N) $me >> '$log'" </dev/null >/dev/null 2>&1 &
sleep $(awk "BEGIN{{print $n*{ms_per_char}/1000}}")
touch "{done}/$me"
echo "end $(date +%s.%N) $$" >> "$log"
"#,
                log = log.display(),
                done = done.display(),
            );
            (script, Some(Recorder { log }))
        }
        Module::Mute => (
            "#!/bin/sh
# broken audio: the utterance never ends
exec sleep 100000
"
            .to_string(),
            None,
        ),
    };
    let path = root.join("speak.sh");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut module = format!(
        "GenericExecuteSynth \"{} \\'$DATA\\' \\'$LANGUAGE\\' \\'$RATE\\' \\'$VOLUME\\'\"\n",
        path.display()
    );
    for lang in ["en", "zh", "de", "es", "fr"] {
        module.push_str(&format!(
            "GenericLanguage \"{lang}\" \"{lang}\" \"utf-8\"\n"
        ));
        module.push_str(&format!("AddVoice \"{lang}\" \"MALE1\" \"{lang}\"\n"));
    }
    std::fs::write(conf.join("modules/recorder.conf"), module).unwrap();
    let mut speechd = std::fs::read_to_string(conf.join("speechd.conf")).unwrap();
    speechd.push_str(
        "\nAddModule \"recorder\" \"sd_generic\" \"recorder.conf\"\nDefaultModule recorder\n",
    );
    std::fs::write(conf.join("speechd.conf"), speechd).unwrap();
    recorder
}

impl Server {
    /// With speech-dispatcher's default output module and a null audio output.
    pub fn start(root: &Path) -> Server {
        Self::start_with(root, Module::Null).0
    }

    /// With the recording module.
    pub fn start_recording(root: &Path, ms_per_char: u32) -> (Server, Recorder) {
        let (s, r) = Self::start_with(root, Module::Recorder { ms_per_char });
        (s, r.unwrap())
    }

    /// With a module that never finishes an utterance.
    pub fn start_mute(root: &Path) -> Server {
        Self::start_with(root, Module::Mute).0
    }

    /// The socket clients connect to.
    pub fn socket(root: &Path) -> PathBuf {
        root.join("run/speech-dispatcher/speechd.sock")
    }

    pub fn start_with(root: &Path, module: Module) -> (Server, Option<Recorder>) {
        let home = root.join("home");
        let run = root.join("run");
        for d in [&home, &run, &root.join("log")] {
            std::fs::create_dir_all(d).unwrap();
        }
        let conf = root.join("conf");
        let mut recorder = None;
        if !conf.exists() {
            let ok = Command::new("cp")
                .args(["-r", "/etc/speech-dispatcher"])
                .arg(&conf)
                .status()
                .unwrap();
            assert!(ok.success(), "copying /etc/speech-dispatcher");
            let mut speechd = std::fs::read_to_string(conf.join("speechd.conf")).unwrap();
            speechd.push_str("\nAudioOutputMethod \"libao\"\n");
            std::fs::write(conf.join("speechd.conf"), speechd).unwrap();
            std::fs::write(home.join(".libao"), "default_driver=null\n").unwrap();
            recorder = write_module(root, &conf, module);
        } else if let Module::Recorder { .. } = module {
            recorder = Some(Recorder {
                log: root.join("utterances.log"),
            });
        }
        let pidfile = root.join("spd.pid");
        let _ = std::fs::remove_file(&pidfile);
        let sock = run.join("speech-dispatcher/speechd.sock");
        let _ = std::fs::remove_file(&sock);
        let status = Command::new("speech-dispatcher")
            .args(["-d", "-t", "0", "-C"])
            .arg(&conf)
            .arg("-L")
            .arg(root.join("log"))
            .arg("-P")
            .arg(&pidfile)
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &run)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("speech-dispatcher is installed (apt install speech-dispatcher)");
        assert!(status.success());
        let t = Instant::now();
        while !(sock.exists() && pidfile.exists()) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no speech-dispatcher"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::env::set_var("HOME", &home);
        std::env::set_var("XDG_RUNTIME_DIR", &run);
        std::env::set_var("SPEECHD_ADDRESS", format!("unix_socket:{}", sock.display()));
        (Server { pidfile }, recorder)
    }

    pub fn kill(&self, sig: i32) {
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: the pid of the speech-dispatcher this test started.
                unsafe { libc::kill(pid, sig) };
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill(libc::SIGTERM);
    }
}
