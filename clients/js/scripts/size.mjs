// Measures the package as an app would ship it: everything bundled and
// minified with esbuild, then gzipped (level 9). Prints one line.
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const result = await build({
  entryPoints: [join(root, 'src', 'index.ts')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2020',
  legalComments: 'none',
  write: false,
});
const code = result.outputFiles[0].contents;
const gz = gzipSync(code, { level: 9 });
console.log(`@iris-chat/client: ${code.length} bytes minified, ${gz.length} bytes minified+gzipped (${(gz.length / 1024).toFixed(1)} KiB)`);
