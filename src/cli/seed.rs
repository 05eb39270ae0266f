//! `aurum seed --profiles N`: realistic profiles, loaded fast.
//!
//! Rows are generated in Rust and sent as column arrays to one
//! `INSERT ... SELECT FROM unnest(...)` per batch: a single statement, parsed
//! once and reused, whose size does not depend on the batch's row count.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use clap::Args;
use diesel::sql_types::{Array, Date, Int8, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::CliError;

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// How many profiles to add.
    #[arg(long, default_value_t = 100_000)]
    profiles: u64,
    #[command(flatten)]
    database: super::DatabaseArgs,
    /// Only seed when the profiles table is empty.
    #[arg(long)]
    if_empty: bool,
    /// Random seed, for repeatable data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Rows per INSERT.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Concurrent database connections.
    #[arg(long, default_value_t = 3)]
    connections: usize,
}

pub fn seed(args: &SeedArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(seed_async(args))
}

#[derive(diesel::QueryableByName)]
struct MaxId {
    #[diesel(sql_type = Int8)]
    max_id: i64,
    #[diesel(sql_type = Int8)]
    count: i64,
}

async fn seed_async(args: &SeedArgs) -> Result<(), CliError> {
    let mut conn = AsyncPgConnection::establish(&args.database.url).await?;
    let existing: MaxId =
        diesel::sql_query("SELECT COALESCE(MAX(id), 0) AS max_id, COUNT(*) AS count FROM profiles")
            .get_result(&mut conn)
            .await?;
    if args.if_empty && existing.count > 0 {
        println!("profiles already holds {} rows; not seeding", existing.count);
        return Ok(());
    }
    let started = std::time::Instant::now();
    let first_id = existing.max_id + 1;
    let total = args.profiles;
    let batch = args.batch.max(1) as u64;
    let batches = total.div_ceil(batch);
    let now = Utc::now();
    let workers = args.connections.max(1) as u64;

    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let url = args.database.url.clone();
        let seed = args.seed;
        tasks.spawn(async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            let mut index = worker;
            while index < batches {
                let start = index * batch;
                let count = batch.min(total - start);
                // One generator per batch: the data does not depend on how
                // many connections loaded it.
                let mut rng = SmallRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let rows = Columns::generate(&mut rng, first_id + start as i64, count as usize, now);
                rows.insert(&mut conn).await?;
                index += workers;
            }
            Ok::<(), CliError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    diesel::sql_query("ANALYZE profiles").execute(&mut conn).await?;
    let elapsed = started.elapsed();
    println!(
        "seeded {total} profiles (ids {first_id}..={}) in {:.1}s ({:.0} rows/s)",
        first_id + total as i64 - 1,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(1e-9),
    );
    Ok(())
}

/// Generates and inserts `count` profiles with ids from `first_id`, in one
/// statement; what `seed` does per batch, and what tests use to make data.
pub async fn insert_generated(
    conn: &mut AsyncPgConnection,
    first_id: i64,
    count: usize,
    seed: u64,
    now: DateTime<Utc>,
) -> diesel::QueryResult<usize> {
    let mut rng = SmallRng::seed_from_u64(seed);
    Columns::generate(&mut rng, first_id, count, now)
        .insert(conn)
        .await
}

/// One batch of profiles, column by column.
#[derive(Default)]
struct Columns {
    id: Vec<i64>,
    display_name: Vec<String>,
    gender: Vec<&'static str>,
    date_of_birth: Vec<NaiveDate>,
    religion: Vec<&'static str>,
    city: Vec<&'static str>,
    occupation: Vec<Option<&'static str>>,
    bio: Vec<String>,
    verification_status: Vec<&'static str>,
    created_at: Vec<DateTime<Utc>>,
    last_active_at: Vec<DateTime<Utc>>,
}

impl Columns {
    fn generate(rng: &mut SmallRng, first_id: i64, count: usize, now: DateTime<Utc>) -> Self {
        let today = now.date_naive();
        let two_years_secs = 2 * 365 * 24 * 3600;
        let mut c = Self::default();
        for offset in 0..count {
            let female = rng.random_bool(0.5);
            let first = if female {
                pick(rng, FEMALE_NAMES)
            } else {
                pick(rng, MALE_NAMES)
            };
            let last = pick(rng, LAST_NAMES);
            // Ages 21..=45, a little heavier at the younger end as on real platforms.
            let age_years = 21.0 + 24.0 * rng.random::<f64>().powf(1.3);
            let age_days = (age_years * 365.25) as i64;
            let created_at = now - Duration::seconds(rng.random_range(0..two_years_secs));
            let occupation = (!rng.random_bool(0.08)).then(|| pick(rng, OCCUPATIONS));
            let city = CITIES[zipf_index(rng, CITIES.len())];
            c.id.push(first_id + offset as i64);
            c.display_name.push(format!("{first} {last}"));
            c.gender.push(if female { "female" } else { "male" });
            c.date_of_birth.push(today - Duration::days(age_days));
            c.religion.push(weighted(rng, RELIGIONS));
            c.city.push(city);
            c.occupation.push(occupation);
            c.bio.push(bio(rng, occupation, city));
            c.verification_status.push(weighted(
                rng,
                &[("approved", 70), ("pending", 20), ("rejected", 10)],
            ));
            c.created_at.push(created_at);
            let since_created = (now - created_at).num_seconds().max(1);
            c.last_active_at
                .push(now - Duration::seconds(rng.random_range(0..since_created)));
        }
        c
    }

    async fn insert(self, conn: &mut AsyncPgConnection) -> diesel::QueryResult<usize> {
        diesel::sql_query(
            "INSERT INTO profiles (id, display_name, gender, date_of_birth, religion, city, occupation, \
             bio, verification_status, created_at, updated_at, last_active_at) \
             SELECT id, display_name, gender, date_of_birth, religion, city, occupation, bio, \
                    verification_status, created_at, created_at, last_active_at \
             FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
               AS t(id, display_name, gender, date_of_birth, religion, city, occupation, bio, \
                    verification_status, created_at, last_active_at)",
        )
        .bind::<Array<Int8>, _>(self.id)
        .bind::<Array<Text>, _>(self.display_name)
        .bind::<Array<Text>, _>(self.gender)
        .bind::<Array<Date>, _>(self.date_of_birth)
        .bind::<Array<Text>, _>(self.religion)
        .bind::<Array<Text>, _>(self.city)
        .bind::<Array<Nullable<Text>>, _>(self.occupation)
        .bind::<Array<Text>, _>(self.bio)
        .bind::<Array<Text>, _>(self.verification_status)
        .bind::<Array<Timestamptz>, _>(self.created_at)
        .bind::<Array<Timestamptz>, _>(self.last_active_at)
        .execute(conn)
        .await
    }
}

fn pick<T: Copy>(rng: &mut SmallRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn weighted(rng: &mut SmallRng, items: &[(&'static str, u32)]) -> &'static str {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total.max(1));
    for (item, weight) in items {
        if roll < *weight {
            return item;
        }
        roll -= weight;
    }
    items.last().map_or("", |(item, _)| item)
}

/// A Zipf-like index (exponent ~1): a few big cities hold most members and
/// a long tail holds few, via inverse-CDF sampling of 1/k weights.
fn zipf_index(rng: &mut SmallRng, n: usize) -> usize {
    let harmonic = (n as f64).ln() + 0.577_215_664_9;
    let target = rng.random::<f64>() * harmonic;
    // Partial sums of 1/k approximate ln(k) + gamma.
    let k = (target - 0.577_215_664_9).exp();
    (k as usize).min(n - 1)
}

fn bio(rng: &mut SmallRng, occupation: Option<&str>, city: &str) -> String {
    let hobby_a = pick(rng, HOBBIES);
    let hobby_b = pick(rng, HOBBIES);
    let value = pick(rng, VALUES);
    let work = occupation.map_or_else(
        || "Between jobs and exploring".to_owned(),
        |o| {
            let article = if o.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            format!("Working as {article} {o}")
        },
    );
    format!("{work} in {city}. I enjoy {hobby_a} and {hobby_b}. Looking for someone who values {value}.")
}

const RELIGIONS: &[(&str, u32)] = &[
    ("Hindu", 55),
    ("Muslim", 14),
    ("Christian", 10),
    ("Sikh", 7),
    ("Jain", 4),
    ("Buddhist", 4),
    ("Parsi", 2),
    ("Spiritual", 4),
];

const FEMALE_NAMES: &[&str] = &[
    "Aanya", "Aditi", "Ananya", "Anika", "Anjali", "Diya", "Divya", "Fatima", "Gauri", "Isha", "Ishita",
    "Kavya", "Kriti", "Lakshmi", "Maya", "Meera", "Naina", "Neha", "Nisha", "Pooja", "Priya", "Radhika",
    "Riya", "Sana", "Saanvi", "Shreya", "Simran", "Sneha", "Tanvi", "Zara", "Aisha", "Mariam", "Harpreet",
    "Jasleen", "Grace", "Sarah", "Tara", "Vidya", "Yamini", "Zoya",
];

const MALE_NAMES: &[&str] = &[
    "Aarav",
    "Aditya",
    "Arjun",
    "Aryan",
    "Dev",
    "Dhruv",
    "Farhan",
    "Gaurav",
    "Harsh",
    "Ishaan",
    "Kabir",
    "Karan",
    "Krishna",
    "Manish",
    "Mohit",
    "Nikhil",
    "Omar",
    "Pranav",
    "Rahul",
    "Raj",
    "Rohan",
    "Sahil",
    "Samir",
    "Siddharth",
    "Tarun",
    "Varun",
    "Vihaan",
    "Vikram",
    "Yash",
    "Zaid",
    "Ayaan",
    "Imran",
    "Gurpreet",
    "Manpreet",
    "Joseph",
    "Daniel",
    "Ravi",
    "Suresh",
    "Vivek",
    "Amit",
];

const LAST_NAMES: &[&str] = &[
    "Sharma",
    "Verma",
    "Gupta",
    "Patel",
    "Shah",
    "Mehta",
    "Iyer",
    "Nair",
    "Menon",
    "Reddy",
    "Rao",
    "Naidu",
    "Pillai",
    "Kapoor",
    "Khanna",
    "Malhotra",
    "Chopra",
    "Singh",
    "Gill",
    "Sandhu",
    "Khan",
    "Ahmed",
    "Qureshi",
    "Siddiqui",
    "Fernandes",
    "D'Souza",
    "Thomas",
    "George",
    "Jain",
    "Agarwal",
    "Bansal",
    "Goel",
    "Mittal",
    "Das",
    "Banerjee",
    "Chatterjee",
    "Mukherjee",
    "Bose",
    "Ghosh",
    "Sen",
    "Kulkarni",
    "Deshpande",
    "Joshi",
    "Patil",
    "Pawar",
    "Bhat",
    "Hegde",
    "Shetty",
    "Kamath",
    "Irani",
];

const OCCUPATIONS: &[&str] = &[
    "software engineer",
    "doctor",
    "teacher",
    "chartered accountant",
    "civil engineer",
    "lawyer",
    "data scientist",
    "architect",
    "pharmacist",
    "nurse",
    "product manager",
    "graphic designer",
    "banker",
    "professor",
    "dentist",
    "marketing manager",
    "entrepreneur",
    "journalist",
    "research scientist",
    "government officer",
    "consultant",
    "pilot",
    "chef",
    "photographer",
    "financial analyst",
    "HR manager",
    "mechanical engineer",
    "veterinarian",
    "psychologist",
    "musician",
];

const HOBBIES: &[&str] = &[
    "travelling",
    "cooking",
    "reading",
    "classical music",
    "cricket",
    "yoga",
    "trekking",
    "photography",
    "painting",
    "dancing",
    "films",
    "badminton",
    "gardening",
    "cycling",
    "writing",
    "board games",
    "volunteering",
    "swimming",
    "running",
    "baking",
];

const VALUES: &[&str] = &[
    "family",
    "honesty",
    "kindness",
    "ambition",
    "humour",
    "tradition",
    "independence",
    "curiosity",
    "respect",
    "adventure",
];

/// Largest first, so the Zipf-like draw favours the big metros.
const CITIES: &[&str] = &[
    "Mumbai",
    "Delhi",
    "Bengaluru",
    "Hyderabad",
    "Chennai",
    "Kolkata",
    "Pune",
    "Ahmedabad",
    "Surat",
    "Jaipur",
    "Lucknow",
    "Kanpur",
    "Nagpur",
    "Indore",
    "Thane",
    "Bhopal",
    "Visakhapatnam",
    "Patna",
    "Vadodara",
    "Ghaziabad",
    "Ludhiana",
    "Agra",
    "Nashik",
    "Faridabad",
    "Meerut",
    "Rajkot",
    "Varanasi",
    "Srinagar",
    "Aurangabad",
    "Dhanbad",
    "Amritsar",
    "Navi Mumbai",
    "Prayagraj",
    "Ranchi",
    "Howrah",
    "Coimbatore",
    "Jabalpur",
    "Gwalior",
    "Vijayawada",
    "Jodhpur",
    "Madurai",
    "Raipur",
    "Kota",
    "Guwahati",
    "Chandigarh",
    "Solapur",
    "Hubballi",
    "Tiruchirappalli",
    "Bareilly",
    "Mysuru",
    "Tiruppur",
    "Gurugram",
    "Aligarh",
    "Jalandhar",
    "Bhubaneswar",
    "Salem",
    "Warangal",
    "Thiruvananthapuram",
    "Bhiwandi",
    "Saharanpur",
    "Guntur",
    "Amravati",
    "Bikaner",
    "Noida",
    "Jamshedpur",
    "Bhilai",
    "Cuttack",
    "Firozabad",
    "Kochi",
    "Nellore",
    "Bhavnagar",
    "Dehradun",
    "Durgapur",
    "Asansol",
    "Rourkela",
    "Nanded",
    "Kolhapur",
    "Ajmer",
    "Gulbarga",
    "Jamnagar",
    "Ujjain",
    "Loni",
    "Siliguri",
    "Jhansi",
    "Ulhasnagar",
    "Jammu",
    "Mangaluru",
    "Erode",
    "Belagavi",
    "Kurnool",
    "Tirunelveli",
    "Udaipur",
    "Gaya",
    "Jalgaon",
    "Tirupati",
    "Kozhikode",
    "Akola",
    "Thrissur",
    "Bokaro",
    "Bilaspur",
    "Shimla",
    "Panaji",
    "Puducherry",
    "Mohali",
    "Gandhinagar",
    "Shillong",
    "Imphal",
    "Agartala",
    "Aizawl",
    "Kohima",
    "Itanagar",
    "Gangtok",
    "Port Blair",
    "Karnal",
    "Panipat",
    "Rohtak",
    "Hisar",
    "Ambala",
    "Sonipat",
    "Bathinda",
    "Patiala",
    "Pathankot",
    "Haridwar",
    "Rishikesh",
    "Roorkee",
    "Haldwani",
    "Mathura",
    "Aligarh East",
    "Moradabad",
    "Gorakhpur",
    "Allahabad",
    "Ayodhya",
    "Muzaffarpur",
    "Bhagalpur",
    "Darbhanga",
    "Purnia",
    "Hazaribagh",
    "Deoghar",
    "Sambalpur",
    "Berhampur",
    "Balasore",
    "Kharagpur",
    "Haldia",
    "Malda",
    "Bardhaman",
    "Silchar",
    "Dibrugarh",
    "Jorhat",
    "Tezpur",
    "Nagaon",
    "Anand",
    "Nadiad",
    "Morbi",
    "Junagadh",
    "Gandhidham",
    "Bharuch",
    "Valsad",
    "Vapi",
    "Navsari",
    "Porbandar",
    "Sangli",
    "Satara",
    "Latur",
    "Ahmednagar",
    "Dhule",
    "Chandrapur",
    "Ratnagiri",
    "Alibag",
    "Karwar",
    "Udupi",
    "Shivamogga",
    "Tumakuru",
    "Davanagere",
    "Ballari",
    "Hosur",
    "Vellore",
    "Thanjavur",
    "Kanchipuram",
    "Nagercoil",
    "Kollam",
    "Kannur",
    "Alappuzha",
    "Palakkad",
    "Kottayam",
    "Rajahmundry",
    "Kakinada",
    "Anantapur",
    "Kadapa",
    "Karimnagar",
    "Nizamabad",
    "Dubai",
    "London",
    "Toronto",
    "New York",
    "Singapore",
    "Sydney",
    "San Jose",
    "Houston",
    "Melbourne",
    "Auckland",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_the_head_and_reaches_the_tail() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = vec![0u32; CITIES.len()];
        for _ in 0..200_000 {
            counts[zipf_index(&mut rng, CITIES.len())] += 1;
        }
        assert!(counts[0] > counts[10] * 5, "head {counts:?}");
        assert!(counts[10] > counts[150], "middle {counts:?}");
        assert!(counts.iter().filter(|c| **c > 0).count() > 180, "tail reached");
    }

    #[test]
    fn two_hundred_distinct_cities() {
        let unique: std::collections::HashSet<_> = CITIES.iter().collect();
        assert_eq!(unique.len(), CITIES.len());
        assert_eq!(CITIES.len(), 200);
    }
}
