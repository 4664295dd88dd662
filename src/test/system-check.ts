// Printed before the test suite: which optional system packages are here, and what is skipped without them.
// Informational only (exit 0): a bare clone must still pass `npm test`.
import { chromiumSkip, fashionMnistSkip } from "./fixtures.js";

const checks: [string, string | false][] = [
  ["Fashion-MNIST (zoo build, Fashion-MNIST loader tests)", fashionMnistSkip()],
  ["Chromium (report browser test)", chromiumSkip()],
];
for (const [what, skip] of checks) process.stdout.write(skip ? `system: MISSING ${what}: those tests are skipped. ${skip}\n` : `system: found ${what}\n`);
