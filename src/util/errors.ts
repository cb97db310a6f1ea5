/** Errors shared by every layer. */

/**
 * An error whose message is for the user (a bad flag, a bad option value): the CLI prints it
 * without a stack trace and exits with `exitCode` (2 by default).
 */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}
