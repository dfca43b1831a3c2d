//! Reused sandboxes (`sandbox.reuse = "nested"`): one warm container serves job after job,
//! each in a fresh nested sandbox, and job N+1 sees nothing of job N. Each test has its own
//! app with a python pool of one, so the same container serves every job in turn (checked: no
//! container is created between the jobs).

use serde_json::{Value, json};

use crate::common::{
    TestApp, nested_sandboxes, start_on_own_runtime, wait_for_pool_ready, wait_until_no_containers,
};

/// What job N leaves behind, as far as a program can: files in the work dir and `/dev/shm`,
/// SysV shared memory, a semaphore set and a message queue, an abstract unix socket held by
/// a daemon that double-forked, called `setsid` and ignores every signal it can, a changed
/// environment, umask, working directory and rlimit.
const JOB_N: &str = r#"
import ctypes, os, resource, signal, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
open('/box/left-behind.txt', 'w').write('secret')
os.mkdir('/box/dir')
open('/dev/shm/left-behind', 'w').write('secret')
IPC_CREAT = 0o1000
assert libc.shmget(0x52554e, 4096, IPC_CREAT | 0o666) >= 0, ctypes.get_errno()
assert libc.semget(0x52554e, 1, IPC_CREAT | 0o666) >= 0, ctypes.get_errno()
assert libc.msgget(0x52554e, IPC_CREAT | 0o666) >= 0, ctypes.get_errno()
os.environ['LEFT_BEHIND'] = '1'
os.umask(0o077)
os.chdir('/box/dir')
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        held.bind('\0runbox-left-behind')
        held.listen(1)
        open('/box/daemon-up', 'w').write('1')
        time.sleep(600)
    os._exit(0)
while not os.path.exists('/box/daemon-up'):
    time.sleep(0.01)
print('left', flush=True)
"#;

/// Job N+1 reports what it finds of job N, one `name=value` per line.
const JOB_N_PLUS_1: &str = r#"
import ctypes, os, resource, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
print('box=' + ','.join(sorted(os.listdir('/box'))))
print('shm=' + ','.join(sorted(os.listdir('/dev/shm'))))
print('sysv=%d,%d,%d' % (libc.shmget(0x52554e, 0, 0), libc.semget(0x52554e, 0, 0), libc.msgget(0x52554e, 0)))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect('\0runbox-left-behind')
    print('socket=reached')
except OSError:
    print('socket=none')
print('pids=' + ','.join(sorted(p for p in os.listdir('/proc') if p.isdigit())))
print('env=' + ('LEFT_BEHIND' in os.environ and 'left' or 'clean'))
print('variables=' + ','.join(sorted(os.environ)))
print('stdin=' + sys.stdin.read())
old = os.umask(0o022)
print('umask=%03o' % old)
print('cwd=' + os.getcwd())
print('nofile=%d' % resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"#;

fn pooled_python_app() -> TestApp {
    start_on_own_runtime(&[
        ("RUNBOX_POOL__ENABLED", "true"),
        ("RUNBOX_POOL__SIZES", "{ python = 1 }"),
    ])
}

/// Waits until the python pool holds a ready sandbox.
async fn wait_for_ready(app: &TestApp) {
    wait_for_pool_ready(app, "python").await;
}

async fn run(app: &TestApp, code: &str) -> Value {
    wait_for_ready(app).await;
    app.run_ok(json!({ "language": "python", "code": code, "timeout_ms": 10000 }))
        .await
}

async fn stop(app: TestApp) {
    app.server.shutdown().await.unwrap();
    wait_until_no_containers(&[
        "runbox.language=python".to_owned(),
        "runbox.kind=pool".to_owned(),
    ])
    .await;
}

#[tokio::test]
async fn job_n_plus_1_sees_nothing_of_job_n_in_a_reused_sandbox() {
    if !nested_sandboxes() {
        return;
    }
    let app = pooled_python_app();
    wait_for_ready(&app).await;
    let created = app.server.executor.sandboxes().created_count();

    let first = run(&app, JOB_N).await;
    assert_eq!(first["status"], "success", "{first}");
    assert_eq!(first["stdout"], "left\n", "{first}");
    wait_for_ready(&app).await;
    let second = app
        .run_ok(
            json!({ "language": "python", "code": JOB_N_PLUS_1, "timeout_ms": 10000,
            "stdin": "from job N+1" }),
        )
        .await;
    assert_eq!(second["status"], "success", "{second}");

    // The same container served both: none was created, and it came back after each job.
    assert_eq!(app.server.executor.sandboxes().created_count(), created);
    assert!(
        app.metric("runbox_pool_returned_total{language=\"python\"}")
            .await
            >= 1,
        "the sandbox never came back to the pool"
    );
    let report = second["stdout"].as_str().unwrap();
    for line in [
        "box=main.py",
        "shm=",
        "sysv=-1,-1,-1",
        "socket=none",
        // bubblewrap's init and the program: the daemon is gone with job N's pid namespace.
        "pids=1,2",
        "env=clean",
        // Exactly the sandbox's environment, whether the job's
        // nested sandbox was made ahead of it or not.
        "variables=HOME,LANG,PATH,TMPDIR",
        // Its own stdin, written into the sandbox made ahead of the job.
        "stdin=from job N+1",
        "umask=022",
        "cwd=/box",
        "nofile=512",
    ] {
        assert!(
            report.lines().any(|l| l == line),
            "job N+1 saw `{line}` otherwise:\n{report}"
        );
    }
    stop(app).await;
}

#[tokio::test]
async fn a_job_cut_short_retires_its_reused_sandbox() {
    if !nested_sandboxes() {
        return;
    }
    let app = pooled_python_app();
    wait_for_ready(&app).await;
    let created = app.server.executor.sandboxes().created_count();
    let r = app
        .run_ok(json!({ "language": "python", "code": "while True: pass", "timeout_ms": 500 }))
        .await;
    assert_eq!(r["status"], "timeout", "{r}");
    // The sandbox is not given back: the pool replaces it with a new container.
    wait_for_ready(&app).await;
    assert_eq!(app.server.executor.sandboxes().created_count(), created + 1);
    assert_eq!(
        app.metric("runbox_pool_returned_total{language=\"python\"}")
            .await,
        0
    );
    // And the next job runs normally in the new one.
    let r = run(&app, "print('after')").await;
    assert_eq!(r["stdout"], "after\n", "{r}");
    stop(app).await;
}

#[tokio::test]
async fn a_job_cannot_make_namespaces_or_mounts_in_its_nested_sandbox() {
    if !nested_sandboxes() {
        return;
    }
    let app = pooled_python_app();
    let code = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID = 0x10000000, 0x20000, 0x40000000, 0x20000000
for name, flag in (('user', CLONE_NEWUSER), ('mount', CLONE_NEWNS), ('net', CLONE_NEWNET), ('pid', CLONE_NEWPID)):
    rc = libc.unshare(flag)
    print(name, rc, ctypes.get_errno())
rc = libc.mount(b'none', b'/box', b'tmpfs', 0, None)
print('mount', rc, ctypes.get_errno())
print('caps', open('/proc/self/status').read().split('CapEff:')[1].split()[0])
"#;
    let r = run(&app, code).await;
    assert_eq!(r["status"], "success", "{r}");
    let out = r["stdout"].as_str().unwrap();
    for name in ["user", "mount", "net", "pid", "mount"] {
        // EPERM from the job's own seccomp filter.
        assert!(out.contains(&format!("{name} -1 1\n")), "{name}:\n{out}");
    }
    assert!(out.contains("caps 0000000000000000"), "{out}");
    stop(app).await;
}

/// A Java pool of one: its sandbox makes a warm compiler (`warm_compile`) ahead of each job.
fn pooled_java_app() -> TestApp {
    start_on_own_runtime(&[
        ("RUNBOX_POOL__ENABLED", "true"),
        ("RUNBOX_POOL__SIZES", "{ java = 1 }"),
    ])
}

async fn run_java(app: &TestApp, body: Value) -> Value {
    wait_for_pool_ready(app, "java").await;
    app.run_ok(body).await
}

/// A compile in the warm compiler made ahead of the job says exactly what javac says in a new
/// JVM (the shared app has no pool: its sandboxes are made for the job, and compile cold), finds
/// the class holding `main` the same way, and is fast because it is warm. A compile cache hit
/// between misses (its sandbox made ahead is the shim, not a compiler: nobody would use it)
/// does not retire the sandbox: one container serves every job.
#[tokio::test]
async fn a_java_compile_in_the_warm_compiler_is_the_compile_of_a_new_one() {
    if !nested_sandboxes() {
        return;
    }
    let app = pooled_java_app();
    wait_for_pool_ready(&app, "java").await;
    let created = app.server.executor.sandboxes().created_count();

    let broken = json!({ "language": "java",
        "code": "public class Main {\n  public static void main(String[] a) {\n    int x = \"text\";\n    undefined();\n  }\n}\n" });
    let warm = run_java(&app, broken.clone()).await;
    let cold = crate::common::run_and_clean(broken).await;
    assert_eq!(warm["status"], "compile_error", "{warm}");
    assert_eq!(
        warm["compile"]["stderr"], cold["compile"]["stderr"],
        "{warm}\n{cold}"
    );
    assert_eq!(warm["compile"]["exit_code"], cold["compile"]["exit_code"]);
    assert!(
        warm["compile"]["stderr"]
            .as_str()
            .unwrap()
            .contains("2 errors"),
        "{warm}"
    );

    // The entry file's class wins over another class with a main; a public class pasted into
    // a file of another name is renamed.
    let files = json!({ "language": "java", "files": [
        { "name": "app/Entry.java", "content": "package app;\npublic class Entry {\n  public static void main(String[] a) { System.out.println(\"entry \" + new Helper().name()); }\n}\n" },
        { "name": "Other.java", "content": "public class Other {\n  public static void main(String[] a) { System.out.println(\"other\"); }\n}\n" },
        { "name": "app/Pasted.java", "content": "package app;\npublic class Helper {\n  String name() { return \"helper\"; }\n}\n" }
    ]});
    let r = run_java(&app, files).await;
    assert_eq!(r["stdout"], "entry helper\n", "{r}");

    // Warm: a hello world's compile well under a new JVM's (~400 ms here), the best of three
    // (a busy machine may slow one).
    let hello = "public class Main { public static void main(String[] a) { System.out.println(\"hello\"); } }";
    let mut fastest = u64::MAX;
    for run in 0..3 {
        let code = format!("{hello}\n// {run} {}", uuid::Uuid::new_v4());
        let r = run_java(&app, json!({ "language": "java", "code": code })).await;
        assert_eq!(r["stdout"], "hello\n", "{r}");
        assert_eq!(r["compile"]["cached"], false, "{r}");
        fastest = fastest.min(r["compile"]["duration_ms"].as_u64().unwrap());
    }
    assert!(fastest < 250, "the warm compile took {fastest} ms");

    // A hit (no compile), then a miss again: compiled right, in the same container.
    let same = format!("{hello}\n// {}", uuid::Uuid::new_v4());
    for cached in [false, true] {
        let r = run_java(&app, json!({ "language": "java", "code": same })).await;
        assert_eq!(r["compile"]["cached"], cached, "{r}");
        assert_eq!(r["stdout"], "hello\n", "{r}");
    }
    let code = format!("{hello}\n// {}", uuid::Uuid::new_v4());
    let r = run_java(&app, json!({ "language": "java", "code": code })).await;
    assert_eq!(r["stdout"], "hello\n", "{r}");
    assert_eq!(app.server.executor.sandboxes().created_count(), created);

    app.server.shutdown().await.unwrap();
    wait_until_no_containers(&[
        "runbox.language=java".to_owned(),
        "runbox.kind=pool".to_owned(),
    ])
    .await;
}
