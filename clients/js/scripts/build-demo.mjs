// Builds the demo page served by `iris` at /demo: bundles demo/demo.ts with
// the package (src/) into http/demo/demo.js and copies demo/index.html
// beside it. Both are committed, so that `cargo build` needs no npm
// (http/src/demo.rs includes them). `--check` fails if the committed
// files differ from a fresh build.
import { build } from 'esbuild';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, '..', '..', 'http', 'demo');
const check = process.argv.includes('--check');

const result = await build({
  entryPoints: [join(root, 'demo', 'demo.ts')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2020',
  alias: { '@iris-chat/client': join(root, 'src', 'index.ts') },
  legalComments: 'none',
  write: false,
  logLevel: 'warning',
});
const files = {
  'demo.js': `// Built by clients/js/scripts/build-demo.mjs from clients/js/demo/demo.ts; do not edit.\n${result.outputFiles[0].text}`,
  'index.html': readFileSync(join(root, 'demo', 'index.html'), 'utf8'),
};
let stale = [];
for (const [name, text] of Object.entries(files)) {
  const path = join(out, name);
  if (check) {
    let old = '';
    try {
      old = readFileSync(path, 'utf8');
    } catch {}
    if (old !== text) stale.push(path);
  } else {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
    console.log(`wrote ${path} (${text.length} bytes)`);
  }
}
if (stale.length) {
  console.error(`stale: ${stale.join(', ')}; run npm run build in clients/js and commit the result`);
  process.exit(1);
}
