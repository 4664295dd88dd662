// Numbers typed on the command line. Number() also reads "0x10" (16), "0b11", "0o7" and "Infinity", which no
// option means; an option value is written in decimal, with an optional exponent ("255", "0.01", "1e-3").
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** The value of a decimal number's text (surrounding blanks allowed); NaN for anything else. */
export function decimal(text: string): number {
  const t = text.trim();
  return DECIMAL.test(t) ? Number(t) : NaN;
}
