// An AI agent's code-execution tool, written the way users of the original
// zeroboot SDK write it. Build with `npm run build`; the compiled file is
// dist/examples/tool.js.
import { pathToFileURL } from "node:url";
import { Sandbox } from "@zeroboot/sdk";

const sb = new Sandbox(process.env.ZEROBOOT_API_KEY);

async function runInSandbox(code: string) {
  return sb.run(code);
}

export async function execute_code({ code }: { code: string }) {
  try {
    return { success: true, output: await runInSandbox(code) };
  } catch (e) {
    return { success: false, output: String(e) };
  }
}

// `node dist/examples/tool.js 'print(1 + 1)'` runs the tool once.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const code = process.argv[2] ?? "print(1 + 1)";
  console.log(JSON.stringify(await execute_code({ code })));
}
