// How the stage view tells the user why they are off a stage, or what an SDK
// error means.

export const REASONS = {
  'participant-disconnected': 'You were removed from this stage by the host.',
  'stage-deleted': 'This stage has ended.',
  'token-expired': 'Your access to this stage has expired.',
  'token-reused': 'You joined this stage from another tab or window, so this one was disconnected.',
  'user-initiated': 'You left the stage.',
  'failed-exchange': 'Your access to the stage could not be renewed.',
};

const ERROR_NAMES = {
  1: 'TOKEN_MALFORMED',
  2: 'TOKEN_EXPIRED',
  3: 'TIMEOUT',
  4: 'FAILED',
  5: 'CANCELED',
  6: 'STAGE_AT_CAPACITY',
  7: 'CODEC_MISMATCH',
  8: 'TOKEN_NOT_ALLOWED',
  9: 'STAGE_DELETED',
  10: 'PARTICIPANT_DISCONNECTED',
};

const ERROR_HINTS = {
  1: 'The token is not valid (malformed or tampered with).',
  2: 'The token has expired. Ask for a new invite.',
  3: 'The server took too long to answer.',
  6: 'The stage is full (12 people can publish at once).',
  7: 'Your browser and the server have no video/audio codec in common.',
  8: 'Your token does not allow publishing, so your camera and microphone are not shared. You can still watch and listen.',
  9: 'This stage has been deleted.',
  10: 'You were removed from this stage, so this invite can no longer be used.',
};

/** A one-line human description of an SDK StageError (or any Error). */
export function describeError(err) {
  if (!err) return 'Unknown error.';
  const code = typeof err.code === 'number' ? err.code : Number(err.code);
  const hint = ERROR_HINTS[code];
  const label = [ERROR_NAMES[code] || (err.name && err.name !== 'Error' ? err.name : null), Number.isFinite(code) ? `code ${code}` : null]
    .filter(Boolean)
    .join(', ');
  const message = err.message || String(err);
  const body = hint ? `${hint} Details: ${message}` : message;
  return `${body}${label ? ` (${label})` : ''}`;
}

/** An error's fields as recorded in `window.__stagecast.events`. */
export function errorFields(err) {
  return {
    name: err && err.name,
    code: err && err.code,
    category: err && err.category,
    message: err && (err.message || String(err)),
  };
}
