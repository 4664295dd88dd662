// Errors caused by the user's input (bad file, wrong shape, bad option). The CLI prints the one-line
// message and exits with code 2; anything else is a bug and exits 1 with a stack trace.
export class UserError extends Error {
  override name = "UserError";
}

export function fail(message: string): never {
  throw new UserError(message);
}
