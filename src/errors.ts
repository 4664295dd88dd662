// Errors caused by the user's input (bad file, wrong shape, bad option). The CLI prints the one-line
// message and exits with code 2; anything else is a bug and exits 1 with a stack trace.
export class UserError extends Error {
  override name = "UserError";

  constructor(message: string) {
    super(oneLine(message));
  }
}

export function fail(message: string): never {
  throw new UserError(message);
}

const MAX_MESSAGE = 2000;

/**
 * The message as one printable line: line breaks become spaces, control bytes and undecodable bytes (a
 * file's binary content quoted in a message) become \xNN / \uNNNN escapes, and an overlong message is cut.
 */
export function oneLine(message: string): string {
  let s = message.replace(/\s*[\r\n]+\s*/g, " ").replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\ufffd\ud800-\udfff]/g, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
  s = s.replace(/\t/g, " ");
  return s.length > MAX_MESSAGE ? `${s.slice(0, MAX_MESSAGE)}… (${s.length - MAX_MESSAGE} more characters)` : s;
}

/** Node file-system error codes in words (one table for every one-line file-system error). */
export const FS_ERRORS: Record<string, string> = {
  ENOENT: "no such file or directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EROFS: "read-only file system",
  EISDIR: "is a folder",
  ENOTDIR: "a part of the path is not a folder",
  ENOSPC: "no space left on the device",
  EDQUOT: "disk quota exceeded",
  EEXIST: "already exists",
  ENAMETOOLONG: "name too long",
  ELOOP: "too many symbolic links",
  EMFILE: "too many open files",
  EXDEV: "cannot move across file systems",
  EBUSY: "resource busy",
  EIO: "input/output error",
  ENOTEMPTY: "folder not empty",
  EINVAL: "invalid argument",
};

/**
 * A file-system error from Node (it carries `code` and `path`, e.g. EROFS on mkdir) as a UserError naming the
 * path; undefined for anything else, which stays a bug.
 */
export function fileSystemError(e: unknown): UserError | undefined {
  if (!(e instanceof Error)) return undefined;
  const { code, path, dest, syscall } = e as NodeJS.ErrnoException & { dest?: string };
  if (typeof code !== "string" || typeof path !== "string" || !(code in FS_ERRORS)) return undefined;
  const target = dest ? `${path} → ${dest}` : path;
  return new UserError(`${syscall ? `${syscall} ` : ""}${target}: ${FS_ERRORS[code]} (${code})`);
}
