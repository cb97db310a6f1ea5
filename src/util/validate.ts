/**
 * Argument validation at the TypeScript boundary. Native code trusts what it is given, so every
 * public entry point checks its options here and fails with one exact, testable message shape:
 * "Expected <expected> for <name> but received <actual>".
 */

/** Describe a received value for an error message: `1.5 of type number`, `"abc" of type string`. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string')
    return `${JSON.stringify(value.length > 60 ? value.slice(0, 57) + '...' : value)} of type string`;
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === 'object') return `an object of type ${value.constructor?.name ?? 'Object'}`;
  return `${String(value)} of type ${typeof value}`;
}

export function invalidParameterError(name: string, expected: string, actual: unknown): Error {
  return new TypeError(`Expected ${expected} for ${name} but received ${describeValue(actual)}`);
}

export function isInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value);
}

export function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

export function expectInteger(name: string, value: unknown, min = -Infinity, max = Infinity): number {
  if (!isInteger(value) || value < min || value > max) {
    const range =
      min === -Infinity && max === Infinity
        ? 'integer'
        : max === Infinity
          ? min === 1
            ? 'positive integer'
            : min === 0
              ? 'non-negative integer'
              : `integer >= ${min}`
          : `integer between ${min} and ${max}`;
    throw invalidParameterError(name, range, value);
  }
  return value;
}

export function expectNumber(name: string, value: unknown, min = -Infinity, max = Infinity): number {
  if (!isFiniteNumber(value) || value < min || value > max) {
    const range =
      min === -Infinity && max === Infinity
        ? 'finite number'
        : max === Infinity
          ? `number >= ${min}`
          : `number between ${min} and ${max}`;
    throw invalidParameterError(name, range, value);
  }
  return value;
}

export function expectString(name: string, value: unknown, { nonEmpty = false } = {}): string {
  if (typeof value !== 'string' || (nonEmpty && value.length === 0)) {
    throw invalidParameterError(name, nonEmpty ? 'non-empty string' : 'string', value);
  }
  return value;
}

export function expectOneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalidParameterError(name, `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`, value);
  }
  return value as T;
}

export function expectBoolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw invalidParameterError(name, 'boolean', value);
  return value;
}
