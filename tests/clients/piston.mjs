// npm piston-client 1.0.2, as published, against the runbox at argv[2]: every scenario's
// answer, as one JSON object on stdout, for tests/it/piston.rs to check.
import piston from "piston-client";

const client = piston({ server: process.argv[2] });
const results = {
  runtimes: await client.runtimes(),
  hello: await client.execute("python", 'print("Hello, World!")'),
  stdin: await client.execute("python", "print(input()[::-1])", { stdin: "olleh" }),
  compile_error: await client.execute("c++", "int main() { return undefined_name; }"),
  timeout: await client.execute("python", "while True: pass", { runTimeout: 1000 }),
  runtime_error: await client.execute("javascript", 'throw new Error("boom")'),
  args: await client.execute("bash", 'echo "$@"'),
};
console.log(JSON.stringify(results));
