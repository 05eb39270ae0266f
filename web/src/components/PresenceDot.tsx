export function PresenceDot(props: { online: boolean; lastSeenAt: string | null | undefined }) {
  const label = props.online ? 'Online' : props.lastSeenAt ? `Last seen ${lastSeen(props.lastSeenAt)}` : 'Offline';
  return (
    <span className="presence" data-online={props.online} title={label}>
      <span className={`dot ${props.online ? 'on' : 'off'}`} aria-hidden="true" />
      <span className="visually-hidden">{label}</span>
    </span>
  );
}

function lastSeen(at: string): string {
  const then = new Date(at).getTime();
  if (Number.isNaN(then)) return 'a while ago';
  const minutes = Math.round((Date.now() - then) / 60000);
  if (minutes < 1) return 'just now';
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return new Date(at).toLocaleDateString();
}
