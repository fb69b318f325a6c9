// Built-in avatars: tiny inline SVG faces as data URLs, so they need no
// network, no emoji font, and fit in the token's 1 KB attribute budget.

const COLORS = ['#f59e0b', '#10b981', '#3b82f6', '#ec4899', '#8b5cf6', '#ef4444'];
const MOUTHS = [
  "<path d='M20 40q12 10 24 0' stroke='#1f2937' stroke-width='4' fill='none' stroke-linecap='round'/>",
  "<circle cx='32' cy='42' r='5' fill='#1f2937'/>",
  "<path d='M22 42h20' stroke='#1f2937' stroke-width='4' stroke-linecap='round'/>",
];

function face(i) {
  const bg = COLORS[i % COLORS.length];
  const mouth = MOUTHS[i % MOUTHS.length];
  const svg =
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 64 64'>" +
    `<circle cx='32' cy='32' r='32' fill='${bg}'/>` +
    "<circle cx='22' cy='26' r='4' fill='#1f2937'/><circle cx='42' cy='26' r='4' fill='#1f2937'/>" +
    mouth +
    '</svg>';
  return 'data:image/svg+xml,' + encodeURIComponent(svg);
}

/** The avatar choices, as data URLs. */
export const AVATARS = COLORS.map((_, i) => face(i));

/** A neutral avatar for participants who did not pick one. */
export const DEFAULT_AVATAR = AVATARS[2];

/** Only our own data URLs are shown; anything else from the wire is replaced. */
export function safeAvatar(url) {
  return typeof url === 'string' && url.startsWith('data:image/svg+xml,') ? url : DEFAULT_AVATAR;
}
