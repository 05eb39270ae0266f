// The server's JSON shapes (docs: /work/shared/DESIGN.md, REST and Socket.IO).

export type Gender = 'male' | 'female';

export interface Profile {
  id: number;
  display_name: string;
  gender: Gender;
  date_of_birth: string;
  religion: string;
  city: string;
  occupation: string | null;
  bio: string;
  verification_status: string;
  created_at: string;
  updated_at: string;
  last_active_at: string;
}

/** A profile with its member's presence, as `/profiles/batch` answers. */
export interface ProfileView extends Profile {
  online: boolean;
  last_seen_at: string;
}

export interface ScrollPage {
  items: Profile[];
  next_cursor: string | null;
  has_more: boolean;
}

export interface BatchAnswer {
  profiles: ProfileView[];
  missing: number[];
}

/** `new_message` and a history row have one shape. */
export interface ChatMessage {
  id: number;
  conversation_id: number;
  sender_id: number;
  recipient_id: number;
  message: string;
  sent_at: string;
  client_id?: string;
}

export interface ConversationSummary {
  id: number;
  other_user_id: number;
  last_message: { id: number; sender_id: number; message: string; sent_at: string } | null;
  last_message_at: string;
  unread_count: number;
}

export interface ConversationPage {
  items: ConversationSummary[];
  next_cursor: string | null;
  has_more: boolean;
}

export interface MessagePage {
  items: ChatMessage[];
  has_more: boolean;
}

export interface ClientConfig {
  socket_url: string;
  dev: boolean;
}

export interface ApiErrorBody {
  error: { code: string; message: string };
}
