# The official Judge0 Python SDK (PyPI judge0 0.0.8), as published, against the runbox whose
# Judge0 API is at argv[1]: every scenario's result as one JSON object on stdout, for
# tests/it/judge0.rs to check.
import json
import sys

import judge0

client = judge0.Client(sys.argv[1])


def seen(submission):
    return {
        "status": submission.status.value if submission.status else None,
        "stdout": submission.stdout,
        "stderr": submission.stderr,
        "compile_output": submission.compile_output,
        "exit_code": submission.exit_code,
        "time": submission.time,
        "memory": submission.memory,
        "token": str(submission.token),
    }


results = {
    "about": client.get_about(),
    "hello": seen(judge0.run(client=client, source_code='print("Hello, World!")', language=judge0.PYTHON)),
    "stdin": seen(judge0.run(client=client, source_code="print(input()[::-1])", stdin="olleh", language=judge0.PYTHON)),
    "compile_error": seen(judge0.run(client=client, source_code="int main() { return undefined_name; }", language=judge0.CPP)),
    "timeout": seen(judge0.run(client=client, source_code="while True: pass", language=judge0.PYTHON, cpu_time_limit=1, wall_time_limit=2)),
    "runtime_error": seen(judge0.run(client=client, source_code="import sys; sys.exit(3)", language=judge0.PYTHON)),
    "expected": seen(judge0.run(client=client, source_code="print(42)", expected_output="41", language=judge0.PYTHON)),
}
# Asynchronous: create, then poll until done.
created = judge0.async_run(client=client, source_code="print('later')", language=judge0.PYTHON)
results["async_token"] = str(created.token)
results["async"] = seen(judge0.wait(client=client, submissions=created))
# A batch.
batch = [judge0.Submission(source_code=f"print({i} * {i})", language=judge0.PYTHON) for i in range(3)]
done = judge0.wait(client=client, submissions=judge0.async_run(client=client, submissions=batch))
results["batch"] = [seen(s) for s in done]
print(json.dumps(results))
